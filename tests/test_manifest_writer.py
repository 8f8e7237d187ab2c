"""workers/manifest_writer.py writes what pyiceberg's write_manifest writes, header and entries alike,
while preparing its per-table parts once (the second manifest of a table reuses them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyiceberg.avro.file import AvroFile
from pyiceberg.manifest import ManifestEntry, ManifestEntryStatus, ManifestFile
from pyiceberg.manifest import write_manifest as pyiceberg_write_manifest
from pyiceberg.table import Table

from app.iceberg import begin_distributed_snapshot
from tests.support.catalogs import CatalogHandle
from tests.support.tables import make_table, rows, write_csv
from workers import manifest_writer
from workers.conversion import write_task_manifest


def _header(table: Table, path: str) -> dict[str, str]:
    with AvroFile[ManifestEntry](table.io.new_input(path)) as f:
        return dict(f.header.meta)


def _unsynced(table: Table, path: str) -> bytes:
    """The file's bytes with its random sync marker (after the header and every block) zeroed."""
    with AvroFile[ManifestEntry](table.io.new_input(path)) as f:
        sync = f.header.sync
    with table.io.new_input(path).open() as stream:
        data = stream.read()
    assert data.count(sync) >= 2
    return data.replace(sync, bytes(len(sync)))


def _summary(manifest: ManifestFile) -> tuple[object, ...]:
    return (
        manifest.partition_spec_id, manifest.content, manifest.added_snapshot_id, manifest.added_files_count,
        manifest.added_rows_count, manifest.partitions, manifest.sequence_number, manifest.min_sequence_number,
    )  # fmt: skip


@pytest.mark.parametrize("version", [1, 2])
def test_the_prepared_writer_writes_what_pyiceberg_writes(
    sqlite_catalog: CatalogHandle, tmp_path: Path, version: int
) -> None:
    cat, ns = sqlite_catalog.catalog, sqlite_catalog.namespace
    table = make_table(cat, f"{ns}.events", partitioned=True, properties={"format-version": str(version)})
    snapshot = begin_distributed_snapshot(table)
    manifest_writer._prepared.clear()
    written = [
        write_task_manifest(snapshot, table, [write_csv(tmp_path / f"{i}.csv", rows(i * 100, 100))], f"t{i}")
        for i in range(2)
    ]
    assert len(manifest_writer._prepared) == 1  # prepared once for both tasks
    for descriptor in written:
        assert descriptor is not None
        ours = descriptor.to_manifest_file()
        entries = ours.fetch_manifest_entry(table.io, discard_deleted=False)
        # the same entries through pyiceberg's own writer
        path = ours.manifest_path.replace(".avro", "-pyiceberg.avro")
        with pyiceberg_write_manifest(
            format_version=version,  # type: ignore[arg-type]
            spec=table.spec(),
            schema=table.schema(),
            output_file=table.io.new_output(path),
            snapshot_id=snapshot.snapshot_id,
            avro_compression="gzip",
        ) as writer:
            for entry in entries:
                writer.add(
                    ManifestEntry.from_args(
                        status=ManifestEntryStatus.ADDED,
                        snapshot_id=snapshot.snapshot_id,
                        sequence_number=None,
                        file_sequence_number=None,
                        data_file=entry.data_file,
                    )
                )
        theirs = writer.to_manifest_file()
        assert _header(table, ours.manifest_path) == _header(table, path)
        assert _unsynced(table, ours.manifest_path) == _unsynced(table, path)  # byte for byte
        assert theirs.fetch_manifest_entry(table.io, discard_deleted=False) == entries
        assert _summary(ours) == _summary(theirs)
        # the length recorded without a stat (workers/manifest_writer.py _WrittenFile) is the file's
        on_disk = Path(ours.manifest_path.removeprefix("file://")).stat().st_size
        assert ours.manifest_length == theirs.manifest_length == on_disk
