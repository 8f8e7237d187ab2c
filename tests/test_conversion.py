"""Converting a task's sources: combined files, sizes measured on disk, bounded memory, clean failures."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from app.errors import InvalidArgument, SourceError
from app.iceberg import begin_distributed_snapshot
from tests.support.catalogs import CatalogHandle
from tests.support.tables import make_table, read_ids, rows, write_csv, write_jsonl
from workers.conversion import write_task_manifest

ROOT = Path(__file__).resolve().parent.parent


def files_under(table_location: str) -> list[Path]:
    data = Path(table_location.removeprefix("file://")) / "data"
    return sorted(p for p in data.rglob("*") if p.is_file()) if data.exists() else []


def test_many_small_sources_share_one_file_per_partition(
    sqlite_catalog: CatalogHandle, tmp_path: Path
) -> None:
    table = make_table(sqlite_catalog.catalog, "ns.t", partitioned=True)
    snapshot = begin_distributed_snapshot(table)
    sources = [write_csv(tmp_path / f"s{i}.csv", rows(i * 30, 30)) for i in range(12)]
    manifest = write_task_manifest(snapshot, table, sources, "t1")
    assert manifest is not None
    # 3 categories x 2 days = 6 partitions, and 12 sources: one file per partition
    assert manifest.added_files_count == 6
    assert len(manifest.partition_metrics) == 6
    assert sum(m.records for m in manifest.partition_metrics.values()) == 360


def test_every_file_is_journaled_before_it_exists_the_manifest_with_the_first_data_file(
    sqlite_catalog: CatalogHandle, tmp_path: Path
) -> None:
    table = make_table(sqlite_catalog.catalog, "ns.t", partitioned=True)
    snapshot = begin_distributed_snapshot(table)
    calls: list[tuple[str, ...]] = []

    def journal(*paths: str) -> None:
        assert not any(Path(p.removeprefix("file://")).exists() for p in paths)
        calls.append(paths)

    manifest = write_task_manifest(snapshot, table, [write_csv(tmp_path / "a.csv", rows(0, 30))], "t1", on_file=journal)
    assert manifest is not None and manifest.added_files_count == 6 and len(calls) == 6  # one call per data file
    assert calls[0] == (manifest.data_files[0], manifest.manifest_path)  # one round trip for both
    assert sorted(p for c in calls for p in c) == sorted([*manifest.data_files, manifest.manifest_path])
    # sources without rows: no file, nothing journaled
    calls.clear()
    empty = tmp_path / "empty.csv"
    empty.write_text("id,name,category,ts,amount\n")
    assert write_task_manifest(snapshot, table, [empty], "t2", on_file=journal) is None
    assert calls == []


def test_gzip_sources_and_directories(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    table = make_table(sqlite_catalog.catalog, "ns.t")
    src = tmp_path / "task-1"
    plain = write_csv(tmp_path / "plain.csv", rows(0, 40))
    (src / "sub").mkdir(parents=True)
    (src / "a.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    jsonl = write_jsonl(tmp_path / "x.jsonl", rows(40, 10))
    (src / "sub" / "b.jsonl.gz").write_bytes(gzip.compress(jsonl.read_bytes()))
    (src / "README.txt").write_text("not data")  # unsupported files inside a directory are skipped
    snapshot = begin_distributed_snapshot(table)
    manifest = write_task_manifest(snapshot, table, [src], "t1")
    assert manifest is not None and manifest.added_rows_count == 50
    assert manifest.added_files_count == 1


def test_empty_sources_give_no_manifest(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    table = make_table(sqlite_catalog.catalog, "ns.t")
    empty = tmp_path / "empty.csv"
    empty.write_text("id,name,category,ts,amount\n")
    snapshot = begin_distributed_snapshot(table)
    assert write_task_manifest(snapshot, table, [empty], "t1") is None
    assert files_under(table.location()) == []


def test_target_file_size_is_measured_on_written_bytes(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    target = 256 * 1024
    table = make_table(
        sqlite_catalog.catalog, "ns.t", properties={"write.target-file-size-bytes": str(target)}
    )
    source = tmp_path / "big.csv"
    data = rows(0, 60_000)
    write_csv(source, data)
    snapshot = begin_distributed_snapshot(table)
    manifest = write_task_manifest(snapshot, table, [source], "t1")
    assert manifest is not None
    sizes = [Path(p.removeprefix("file://")).stat().st_size for p in manifest.data_files]
    assert len(sizes) >= 2
    # every file but the last reached the target on disk; none is far beyond it
    assert all(s >= target for s in sizes[:-1]), sizes
    assert all(s < 3 * target for s in sizes), sizes
    assert manifest.added_rows_count == 60_000
    # the sizes the manifest records (taken from the stream, no stat) are the files' sizes on disk:
    # readers find the Parquet footer by them
    entries = manifest.to_manifest_file().fetch_manifest_entry(table.io, discard_deleted=False)
    recorded = {e.data_file.file_path: e.data_file.file_size_in_bytes for e in entries}
    assert recorded == {p: Path(p.removeprefix("file://")).stat().st_size for p in manifest.data_files}
    assert manifest.added_bytes == sum(sizes)


def _csv_blocks(path: Path, blocks: int) -> float:
    n = 200_000
    block = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "name": pa.array([f"some longer string value {i:08d}" for i in range(n)]),
            "category": pa.array(["abc"[i % 3] for i in range(n)]),
            "ts": pa.array([1_700_000_000_000_000 + i * 1_000_000 for i in range(n)], pa.timestamp("us")),
            "amount": pa.array([i * 0.5 for i in range(n)]),
        }
    )
    with pacsv.CSVWriter(path, block.schema) as writer:
        for k in range(blocks):
            writer.write_table(block.set_column(0, "id", pa.array(range(k * n, (k + 1) * n), pa.int64())))
    return path.stat().st_size / 2**20


def _convert_in_own_process(tmp_path: Path, source: Path) -> dict[str, float]:
    script = textwrap.dedent(
        f"""
        import json, resource
        from pyiceberg.catalog.sql import SqlCatalog
        from app.iceberg import begin_distributed_snapshot
        from tests.support.tables import make_table
        from workers.conversion import write_task_manifest
        from workers.datafiles import use_jemalloc_unless_configured
        use_jemalloc_unless_configured(None)  # what a worker process does when it starts
        cat = SqlCatalog("c", uri="sqlite:///{source}.db", warehouse="file://{tmp_path}/wh-{source.stem}")
        cat.create_namespace("ns")
        table = make_table(cat, "ns.t", partitioned=True)
        snap = begin_distributed_snapshot(table)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        m = write_task_manifest(snap, table, ["{source}"], "t1", buffer_bytes=32 << 20)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"rows": m.added_rows_count, "grown_mb": (peak - base) / 1024}}))
        """
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_memory_stays_flat_as_the_source_grows(tmp_path: Path) -> None:
    # Given the same data as a ~93 MB and a ~280 MB CSV, each converted in a fresh process
    small_mb = _csv_blocks(tmp_path / "small.csv", 6)
    large_mb = _csv_blocks(tmp_path / "large.csv", 18)
    small = _convert_in_own_process(tmp_path, tmp_path / "small.csv")
    large = _convert_in_own_process(tmp_path, tmp_path / "large.csv")
    assert (small["rows"], large["rows"]) == (1_200_000, 3_600_000)
    # Then peak memory grows by far less than the extra source bytes (it is set by the buffer budget)
    assert large["grown_mb"] - small["grown_mb"] < 0.25 * (large_mb - small_mb), (small, large, large_mb)
    assert large["grown_mb"] < large_mb, (large, large_mb)


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("name,category\nx,a\n", r"required column 'id'"),
        ("id,amount\nnot-a-number,1.0\n", r"column 'id'.*long|int64"),
    ],
    ids=["missing-required-column", "impossible-cast"],
)
def test_bad_source_fails_naming_file_and_leaves_nothing(
    sqlite_catalog: CatalogHandle, tmp_path: Path, content: str, pattern: str
) -> None:
    table = make_table(sqlite_catalog.catalog, "ns.t", properties={"write.target-file-size-bytes": "1024"})
    good = write_csv(tmp_path / "good.csv", rows(0, 2000))
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    snapshot = begin_distributed_snapshot(table)
    with pytest.raises(SourceError, match=pattern) as info:
        write_task_manifest(snapshot, table, [good, bad], "t1")
    assert str(bad) in str(info.value)
    assert files_under(table.location()) == []
    metadata = Path(table.location().removeprefix("file://")) / "metadata"
    assert not list(metadata.glob("*-m0.avro"))


def test_unsupported_and_unreadable_sources(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    table = make_table(sqlite_catalog.catalog, "ns.t")
    snapshot = begin_distributed_snapshot(table)
    odd = tmp_path / "data.xlsx"
    odd.write_text("x")
    with pytest.raises(SourceError, match=r"data\.xlsx: unsupported source format"):
        write_task_manifest(snapshot, table, [odd], "t1")
    truncated = tmp_path / "cut.parquet"
    pq.write_table(pa.Table.from_pylist(rows(0, 1000)), truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(SourceError, match=r"cut\.parquet"):
        write_task_manifest(snapshot, table, [truncated], "t1")
    with pytest.raises(SourceError, match=r"missing\.csv"):
        write_task_manifest(snapshot, table, [tmp_path / "missing.csv"], "t1")
    assert files_under(table.location()) == []


def test_bad_target_file_size_property(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    table = make_table(sqlite_catalog.catalog, "ns.t", properties={"write.target-file-size-bytes": "big"})
    snapshot = begin_distributed_snapshot(table)
    with pytest.raises(InvalidArgument, match="write.target-file-size-bytes='big' is not an integer"):
        write_task_manifest(snapshot, table, [write_csv(tmp_path / "a.csv", rows(0, 5))], "t1")


def test_written_table_reads_back_with_pyarrow_alone(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    # The data files are plain Parquet with Iceberg field ids; a non-pyiceberg reader sees every row.
    from app.iceberg import commit_distributed_snapshot

    table = make_table(sqlite_catalog.catalog, "ns.t", partitioned=True)
    snapshot = begin_distributed_snapshot(table)
    manifest = write_task_manifest(snapshot, table, [write_csv(tmp_path / "a.csv", rows(0, 500))], "t1")
    assert manifest is not None
    commit_distributed_snapshot(table, snapshot, [manifest])
    table = sqlite_catalog.catalog.load_table("ns.t")
    assert read_ids(table) == list(range(500))
    files = [pq.ParquetFile(p.removeprefix("file://")).read() for p in manifest.data_files]
    assert sum(f.num_rows for f in files) == 500
    field_ids = {
        f.name: f.metadata[b"PARQUET:field_id"]
        for f in pq.read_schema(manifest.data_files[0].removeprefix("file://"))
    }
    assert field_ids["id"] == b"1" and field_ids["amount"] == b"5"
