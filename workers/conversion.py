"""The conversion step of one ingest task: a host's source files into data files plus ONE manifest stamped with the reserved snapshot."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pyiceberg.manifest import ManifestEntry, ManifestEntryStatus
from pyiceberg.table import Table

from app.errors import FailedPrecondition
from app.formats import SourceFormat, is_supported, source_format
from app.iceberg import DistributedSnapshot, ManifestDescriptor, check_writable
from app.iceberg.descriptor import partition_metrics
from app.iceberg.files import delete_quietly
from app.iceberg.inline_manifest import InlineManifest, header_digest
from app.iceberg.schema_evolution import FieldReserver, LocalFieldIds, SchemaMode
from app.settings import DEFAULT_WRITE_BUFFER_BYTES
from workers.datafiles import DataFileWriter, new_write_prefix
from workers.manifest_writer import write_manifest
from workers.record_ranges import Span
from workers.schema_drift import evolve_task_schema
from workers.sources import read_source
from workers.widening import TextWidening

__all__ = ["ManifestDescriptor", "SourcePart", "expand_sources", "write_task_manifest"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourcePart:
    """One source a task reads: a whole file, or the span of it a host's plan gave the task; its
    format is decided once, here, from the name."""

    path: Path
    fmt: SourceFormat
    span: Span | None = None

    @classmethod
    def of(cls, path: Path, span: Span | None = None) -> SourcePart:
        return cls(path, source_format(path), span)


def expand_sources(paths: Sequence[Path | SourcePart]) -> list[SourcePart]:
    """Parts as given, files named directly, plus every supported file below named directories (sorted).
    An unsupported file named directly is refused here, before anything is written."""
    parts: list[SourcePart] = []
    for path in paths:
        if isinstance(path, SourcePart):
            parts.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            parts += [SourcePart.of(p) for p in found if is_supported(p)]
        else:
            parts.append(SourcePart.of(path))
    return parts


_local: dict[str, LocalFieldIds] = {}


def _local_reservation(commit_uuid: str) -> LocalFieldIds:
    """Without a job store, the tasks of one reservation that run in this process share their ids."""
    if commit_uuid not in _local:
        while len(_local) >= 64:
            _local.pop(next(iter(_local)))
        _local[commit_uuid] = LocalFieldIds()
    return _local[commit_uuid]


class FileJournal(Protocol):
    """Records paths before the files exist, so a killed attempt's files can be found and deleted."""

    def __call__(self, *paths: str) -> None: ...


def write_task_manifest(
    snapshot: DistributedSnapshot,
    table: Table,
    paths: Sequence[Path | str | SourcePart],
    task_id: str,
    on_batch: Callable[[int], None] | None = None,
    on_file: FileJournal | None = None,
    buffer_bytes: int = DEFAULT_WRITE_BUFFER_BYTES,
    schema_mode: SchemaMode = SchemaMode.STRICT,
    reserve: FieldReserver | None = None,
    inline_bytes: int = 0,
) -> ManifestDescriptor | None:
    """Convert ``paths`` into data files and one manifest tagged with the reserved snapshot id.

    Returns ``None`` when the sources hold no rows. On any error every file written is deleted.
    ``on_batch`` is called with the row count of every batch converted (progress reporting);
    ``on_file`` with every file's path before it is created (a journal for orphan cleanup): the
    manifest's path comes with the first data file's, one call (one Redis round trip) for both.
    ``schema_mode`` says what to do with source columns the table lacks; in evolve, the task writes
    with the table's schema plus the fields ``reserve`` gives ids to (the job store's reservation,
    so every task of the job agrees; by default the tasks of this process agree), and the
    descriptor records that change for the commit. With ``inline_bytes`` > 0, a manifest whose
    entries take at most that many bytes is not written: the descriptor carries it (``inline``).
    """
    check_writable(table)
    metadata = table.metadata
    if str(metadata.table_uuid) != snapshot.table_uuid:
        raise FailedPrecondition(
            f"table {'.'.join(table.name())} is not the table the snapshot was reserved on "
            f"(uuid {metadata.table_uuid} != {snapshot.table_uuid})"
        )
    schema = metadata.schema_by_id(snapshot.schema_id) or metadata.schema()
    spec = metadata.specs().get(snapshot.spec_id)
    if spec is None:
        raise FailedPrecondition(f"partition spec {snapshot.spec_id} no longer exists in the table")
    sources = expand_sources([p if isinstance(p, SourcePart) else Path(p) for p in paths])
    schema_mode = SchemaMode(schema_mode)
    base, change = schema, None
    if schema_mode == SchemaMode.EVOLVE:
        reserve = reserve or _local_reservation(snapshot.commit_uuid)
        schema, change = evolve_task_schema(
            base, spec, [(s.path, s.fmt) for s in sources], reserve, metadata.last_column_id
        )
    prefix = new_write_prefix(task_id)
    manifest_path = table.location_provider().new_metadata_location(f"{snapshot.commit_uuid}-{prefix}-m0.avro")
    unjournaled = [manifest_path]  # journaled with the first data file (no data file: no manifest)

    def journal(path: str) -> None:
        if on_file is not None:
            on_file(path, *unjournaled)
            unjournaled.clear()

    writer = DataFileWriter(
        table.io,
        schema,
        spec,
        dict(metadata.properties),
        table.location_provider(),
        prefix,
        journal,
        buffer_bytes,
    )
    # evolve: a text source's int and decimal columns widen by their values (workers/widening.py)
    widening = TextWidening(base, change, spec, writer) if change is not None else None
    written: list[str] = []
    try:
        for source in sources:
            text = widening is not None and source.fmt.name != "parquet"
            batches = read_source(
                source.path,
                widening.read_schema() if widening is not None and text else schema,
                batch_bytes=writer.read_block_bytes,
                span=source.span,
                fmt=source.fmt,
                mode=schema_mode,
            )
            for batch in batches:
                if widening is not None and text:
                    batch = widening.fit(source.path, batch)
                writer.write(batch)
                if on_batch is not None:
                    on_batch(batch.num_rows)
            if widening is not None:
                schema, change = widening.schema, widening.change
        data_files = writer.close()
        written = [d.file_path for d in data_files]
        if not data_files:
            return None
        written.append(manifest_path)
        if on_file is not None and unjournaled:
            on_file(*unjournaled)
        with write_manifest(
            format_version=metadata.format_version,  # type: ignore[arg-type]
            spec=spec,
            schema=schema,
            output_file=table.io.new_output(manifest_path),
            snapshot_id=snapshot.snapshot_id,
            avro_compression=metadata.properties.get("write.avro.compression-codec", "gzip"),  # type: ignore[arg-type]
            inline_limit=inline_bytes if inline_bytes > 0 else -1,
        ) as manifest_writer:
            for data_file in data_files:
                manifest_writer.add(
                    ManifestEntry.from_args(
                        status=ManifestEntryStatus.ADDED,
                        snapshot_id=snapshot.snapshot_id,
                        sequence_number=None,
                        file_sequence_number=None,
                        data_file=data_file,
                    )
                )
        manifest = manifest_writer.to_manifest_file()
        kept = getattr(manifest_writer, "inline", None)
    except BaseException:
        for path in {*writer.abort(), *written}:
            delete_quietly(table.io, [path])
        raise
    metrics = partition_metrics(spec, schema, data_files)
    return ManifestDescriptor.from_manifest(
        task_id=task_id,
        commit_uuid=snapshot.commit_uuid,
        manifest=manifest,
        data_files=[d.file_path for d in data_files],
        added_bytes=sum(d.file_size_in_bytes for d in data_files),
        partition_metrics=metrics,
        schema_change=change,
        inline=InlineManifest(header_digest(kept[0]), kept[1], kept[0]) if kept is not None else None,
    )
