"""Outside checks with Apache Spark and Iceberg's Java library (the reference implementation).

Spark reaches the tables through Iceberg's JdbcCatalog on the PostgreSQL database where pyiceberg's
SqlCatalog keeps them (same catalog name), with the file:// warehouse; one JVM serves the module
(tests/support/spark.py, tests/engines/spark_session.py). Every row is checked, not just totals:

a. Spark reads what Floe committed: a plain commit, a commit rebased over a concurrent pyiceberg
   append, a commit whose manifests were merged with older ones, and a first commit whose task
   manifests were concatenated.
b. Floe commits over snapshots Spark wrote (INSERT, merge-on-read DELETE, rewrite_data_files), begun
   before or after them; then Spark deletes rows from Floe's files; Spark and pyiceberg read it all.
c. Spark reads a table whose schema a Floe job evolved (new columns, a struct field, widened types).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.manifest import ManifestContent
from pyiceberg.table import Table

from app.iceberg import DistributedSnapshot, begin_distributed_snapshot, commit_distributed_snapshot
from app.iceberg.schema_evolution import SchemaMode
from tests.support.catalogs import CatalogHandle, postgres_unavailable, require_or_skip
from tests.support.drift import OLD_ROW, WIDE
from tests.support.spark import INSTALL_HINT, Rows, SparkEngine, jdbc_catalog, spark_missing
from tests.support.tables import make_table, rows, write_csv, write_jsonl, write_parquet
from workers.conversion import ManifestDescriptor, write_task_manifest

pytestmark = [pytest.mark.spark, pytest.mark.postgres, pytest.mark.integration]
# conftest's catalog fixture, on PostgreSQL only: Spark's JdbcCatalog reads pyiceberg's catalog tables
ON_POSTGRES = pytest.mark.parametrize("catalog", ["postgres"], indirect=True)
MERGE = {"commit.manifest-merge.enabled": "true"}


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkEngine]:
    require_or_skip(postgres_unavailable(), "PostgreSQL at 127.0.0.1:5432")  # before paying for a JVM
    require_or_skip(spark_missing(), f"Spark with Iceberg ({INSTALL_HINT})")
    engine = SparkEngine(tmp_path_factory.mktemp("spark") / "spark.log")
    try:
        yield engine
    finally:
        engine.close()


# --- rows: what was written, what an engine returned ----------------------------------------------


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def expected(*parts: list[dict[str, Any]], drop: Callable[[int], bool] = lambda _: False) -> Rows:
    return sorted((as_json(r) for part in parts for r in part if not drop(int(r["id"]))), key=lambda r: r["id"])


def pyiceberg_rows(table: Table, snapshot_id: int | None = None) -> Rows:
    scanned = table.scan(snapshot_id=snapshot_id).to_arrow().to_pylist()
    return sorted((as_json(r) for r in scanned), key=lambda r: r["id"])


def assert_rows(got: Rows, want: Rows, where: str) -> None:
    """Every row, once, with every value; a short account of the difference otherwise."""
    if got == want:
        return
    seen = Counter(r["id"] for r in got)
    by_id = {r["id"]: r for r in got}
    wanted = {r["id"]: r for r in want}
    duplicated = sorted(i for i, n in seen.items() if n > 1)
    missing = sorted(set(wanted) - set(by_id))
    unexpected = sorted(set(by_id) - set(wanted))
    differing = [(wanted[i], by_id[i]) for i in sorted(set(wanted) & set(by_id)) if wanted[i] != by_id[i]]
    pytest.fail(
        f"{where}: {len(got)} rows, expected {len(want)}; duplicated ids {duplicated[:10]} ({len(duplicated)}), "
        f"missing {missing[:10]} ({len(missing)}), unexpected {unexpected[:10]} ({len(unexpected)}), "
        f"differing (expected, got) {differing[:3]} ({len(differing)})"
    )


# --- Floe jobs ------------------------------------------------------------------------------------

WRITERS = ((write_csv, "csv"), (write_jsonl, "jsonl"), (write_parquet, "parquet"))


def write_tasks(
    snapshot: DistributedSnapshot, table: Table, where: Path, parts: list[list[dict[str, Any]]]
) -> list[ManifestDescriptor]:
    """One task (one "host") per part, the source formats in turn; each writes its manifest."""
    manifests = []
    for i, part in enumerate(parts):
        write, ext = WRITERS[i % len(WRITERS)]
        source = write(where / f"host{i}" / f"part{i}.{ext}", part)
        manifest = write_task_manifest(snapshot, table, [source], f"{where.name}-t{i}")
        assert manifest is not None
        manifests.append(manifest)
    return manifests


def commit(table: Table, snapshot: DistributedSnapshot, manifests: list[ManifestDescriptor], job: str) -> int:
    """Floe's commit of one job; the committed snapshot id."""
    return commit_distributed_snapshot(table, snapshot, manifests, {"floe.job-id": job}).snapshot_id


def floe_job(catalog: CatalogHandle, ident: str, where: Path, parts: list[list[dict[str, Any]]], job: str) -> int:
    """A whole Floe job on the table's head: reserve, one task per part, commit."""
    table = catalog.catalog.load_table(ident)
    snapshot = begin_distributed_snapshot(table)
    return commit(table, snapshot, write_tasks(snapshot, table, where, parts), job)


def lineage(snapshots: Rows) -> Rows:
    """Spark's ``snapshots`` metadata rows from the first to the head, by parent (not by commit time)."""
    child = {s["parent_id"]: s for s in snapshots}
    assert len(child) == len(snapshots), "the snapshots are not one line of history"
    ordered = [child[None]]
    while ordered[-1]["snapshot_id"] in child:
        ordered.append(child[ordered[-1]["snapshot_id"]])
    assert len(ordered) == len(snapshots)
    return ordered


def read(ident: str, snapshot_id: int | None = None) -> dict[str, Any]:
    """Spark's operation: every row of the table (as of ``snapshot_id``), sorted."""
    return {"read": ident, "snapshot_id": snapshot_id}


# --- a. Spark reads what Floe committed -----------------------------------------------------------


@ON_POSTGRES
@pytest.mark.timeout(300)
@pytest.mark.parametrize("partitioned", [False, True], ids=["unpartitioned", "identity-category+day-ts"])
def test_spark_reads_every_row_floe_committed(
    spark: SparkEngine, catalog: CatalogHandle, tmp_path: Path, partitioned: bool
) -> None:
    cat = catalog.catalog
    ident = catalog.identifier("events")
    make_table(cat, ident, partitioned=partitioned)

    # plain: three hosts, CSV + JSON lines + Parquet; the first task is big enough (1,500 rows per
    # partition) that its unique columns are written without a dictionary
    job_a = [rows(0, 9000), rows(9000, 200), rows(9200, 100)]
    plain = floe_job(catalog, ident, tmp_path / "a", job_a, "job-a")

    # rebased: another writer appends between the reservation and the commit
    table = cat.load_table(ident)
    snapshot = begin_distributed_snapshot(table)
    job_b = [rows(10_000, 300), rows(10_300, 200), rows(10_500, 100)]
    manifests = write_tasks(snapshot, table, tmp_path / "b", job_b)
    appended = rows(11_000, 50)
    other = cat.load_table(ident)
    other.append(pa.Table.from_pylist(appended, schema=other.schema().as_arrow()))
    append_id = other.metadata.current_snapshot().snapshot_id  # type: ignore[union-attr]
    rebased = commit(table, snapshot, manifests, "job-b")
    table = cat.load_table(ident)
    assert table.metadata.snapshot_by_id(rebased).parent_snapshot_id == append_id  # type: ignore[union-attr]

    # merged: 60 one-file tasks, joined into one at commit, then merged with every older manifest (min-count 2)
    with table.transaction() as tx:
        tx.set_properties({**MERGE, "commit.manifest.min-count-to-merge": "2"})
    job_c = [rows(20_000 + 5 * i, 5) for i in range(60)]
    merged = floe_job(catalog, ident, tmp_path / "c", job_c, "job-c")
    table = cat.load_table(ident)
    listed = table.current_snapshot().manifests(table.io)  # type: ignore[union-attr]
    assert len(listed) == 1, [m.manifest_path for m in listed]  # the job's 60 and the older ones, merged

    # concatenated: a fresh table's first job, its task manifests' Avro blocks joined into one file
    concat_ident = catalog.identifier("concat")
    make_table(cat, concat_ident, partitioned=True, properties={**MERGE, "commit.manifest.min-count-to-merge": "20"})
    job_d = [rows(7 * i, 7) for i in range(30)]
    floe_job(catalog, concat_ident, tmp_path / "d", job_d, "job-d")
    concat = cat.load_table(concat_ident)
    assert len(concat.current_snapshot().manifests(concat.io)) == 1  # type: ignore[union-attr]

    results = spark.run(
        jdbc_catalog(catalog),
        [
            read(ident, plain),
            read(ident, rebased),
            read(ident, merged),
            read(ident),
            read(concat_ident),
            {"sql": f"SELECT * FROM {catalog.properties['name']}.{ident}.snapshots"},
            {"sql": f"SELECT count(*) AS files, sum(record_count) AS records FROM {catalog.properties['name']}."
                    f"{ident}.data_files"},
        ],
    )
    at_plain, at_rebased, at_merged, now, concat_now, history, files = results
    snapshots = lineage(history)
    assert_rows(at_plain, expected(*job_a), "Spark, as of the plain commit")
    assert_rows(at_rebased, expected(*job_a, appended, *job_b), "Spark, as of the rebased commit")
    assert_rows(at_merged, expected(*job_a, appended, *job_b, *job_c), "Spark, as of the merged commit")
    assert_rows(now, at_merged, "Spark, the current snapshot")
    assert_rows(concat_now, expected(*job_d), "Spark, the concatenated manifest")
    # Spark sees Floe's snapshot chain and summaries, and the data files the summary counts
    assert [(s["snapshot_id"], s["operation"]) for s in snapshots] == [
        (plain, "append"), (append_id, "append"), (rebased, "append"), (merged, "append")
    ]
    assert [s["parent_id"] for s in snapshots] == [None, plain, append_id, rebased]
    assert [s["summary"].get("floe.job-id") for s in snapshots] == ["job-a", None, "job-b", "job-c"]
    summary = snapshots[-1]["summary"]
    assert files == [{"files": int(summary["total-data-files"]), "records": int(summary["total-records"])}]
    assert files[0]["records"] == len(now)


# --- b. Floe commits over what Spark wrote --------------------------------------------------------


@dataclass(frozen=True)
class Case:
    created_by: str  # "pyiceberg" or "spark"
    partitioned: bool
    floe_began: str  # the reservation was made "before" or "after" Spark's writes
    merge: bool  # commit.manifest-merge.enabled with min-count 2: Floe rewrites Spark's manifests

    @property
    def id(self) -> str:
        spec = "partitioned" if self.partitioned else "unpartitioned"
        merge = "merge" if self.merge else "no-merge"
        return f"{self.created_by}-table-{spec}-floe-began-{self.floe_began}-spark-{merge}"


CASES = [
    Case("pyiceberg", partitioned=False, floe_began="before", merge=False),
    Case("pyiceberg", partitioned=True, floe_began="after", merge=True),
    Case("spark", partitioned=True, floe_began="before", merge=True),
]


def spark_rows_sql(table: str, start: int, count: int) -> str:
    """INSERT ... SELECT of tests.support.tables.rows(start, count), computed by Spark."""
    return (
        f"INSERT INTO {table} SELECT id, "
        "repeat(concat('name-', CAST(id AS STRING)), CAST(1 + id % 3 AS INT)) AS name, "
        "element_at(array('a', 'b', 'c'), CAST(id % 3 AS INT) + 1) AS category, "
        "TIMESTAMP_NTZ '2024-01-01 00:00:00' + make_dt_interval(CAST(id % 2 AS INT), 0, 0, id) AS ts, "
        "CAST(id AS DOUBLE) * 1.5D AS amount "
        f"FROM range({start}, {start + count})"
    )


def spark_create_sql(table: str, partitioned: bool, properties: dict[str, str]) -> str:
    props = ", ".join(f"'{k}' = '{v}'" for k, v in properties.items())
    return (
        f"CREATE TABLE {table} (id BIGINT NOT NULL, name STRING, category STRING, ts TIMESTAMP_NTZ, "
        f"amount DOUBLE) USING iceberg {'PARTITIONED BY (category, days(ts)) ' if partitioned else ''}"
        f"TBLPROPERTIES ({props})"
    )


def deleted_by_spark(i: int) -> bool:
    """The rows Spark's two DELETEs remove (before Floe's rows exist)."""
    return (i < 300 and i % 7 == 0) or i % 5 == 1


@ON_POSTGRES
@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_floe_commits_over_snapshots_spark_wrote(
    spark: SparkEngine, catalog: CatalogHandle, tmp_path: Path, case: Case
) -> None:
    cat = catalog.catalog
    ident = catalog.identifier("events")
    spark_catalog = jdbc_catalog(catalog)
    full = f"{spark_catalog['name']}.{ident}"
    properties = {"format-version": "2", "write.delete.mode": "merge-on-read"}
    if case.merge:
        properties |= {**MERGE, "commit.manifest.min-count-to-merge": "2"}
    if case.created_by == "pyiceberg":
        make_table(cat, ident, partitioned=case.partitioned, properties=properties)
    else:
        spark.run(spark_catalog, [{"sql": spark_create_sql(full, case.partitioned, properties)}])
    table = cat.load_table(ident)
    assert table.metadata.format_version == 2

    floe_parts = [rows(1000, 400), rows(1400, 100), rows(1500, 50)]
    if case.floe_began == "before":
        snapshot = begin_distributed_snapshot(table)
        manifests = write_tasks(snapshot, table, tmp_path / "floe", floe_parts)

    # Spark: two INSERTs, a merge-on-read DELETE, a compaction of every data file (it applies that
    # DELETE), an INSERT, and a DELETE whose position deletes point into the compacted files
    written = spark.run(
        spark_catalog,
        [
            {"sql": spark_rows_sql(full, 0, 300)},
            {"sql": spark_rows_sql(full, 300, 300)},
            {"sql": f"DELETE FROM {full} WHERE id < 300 AND id % 7 = 0"},
            {"sql": f"CALL {spark_catalog['name']}.system.rewrite_data_files("
                    f"table => '{ident}', options => map('rewrite-all', 'true'))"},
            {"sql": spark_rows_sql(full, 600, 100)},
            {"sql": f"DELETE FROM {full} WHERE id % 5 = 1"},
            {"sql": f"SELECT * FROM {full}.snapshots"},
            {"sql": f"SELECT count(*) AS files, sum(record_count) AS deletes FROM {full}.delete_files"},
        ],
    )
    rewritten, spark_snapshots, live_deletes = written[3], lineage(written[6]), written[7]
    assert rewritten[0]["rewritten_data_files_count"] > 1 and rewritten[0]["added_data_files_count"] >= 1
    assert [s["operation"] for s in spark_snapshots] == ["append", "append", "delete", "replace", "append", "delete"]
    assert int(spark_snapshots[-1]["summary"]["added-position-deletes"]) > 0  # merge-on-read, not copy-on-write
    assert live_deletes[0]["files"] > 0
    spark_rows = expected(rows(0, 700), drop=deleted_by_spark)

    table = cat.load_table(ident)
    spark_head = table.metadata.current_snapshot()
    assert spark_head is not None and spark_head.snapshot_id == spark_snapshots[-1]["snapshot_id"]
    if case.floe_began == "after":
        snapshot = begin_distributed_snapshot(table)
        manifests = write_tasks(snapshot, table, tmp_path / "floe", floe_parts)
    # reserved on the empty table (the commit rebases over all six of Spark's snapshots) or on Spark's head
    assert snapshot.parent_snapshot_id == (None if case.floe_began == "before" else spark_head.snapshot_id)
    floe_id = commit(table, snapshot, manifests, "job-1")

    # Floe's snapshot: on top of Spark's head, the next sequence number, Spark's delete totals carried
    table = cat.load_table(ident)
    floe_snap = table.metadata.current_snapshot()
    assert floe_snap is not None and floe_snap.snapshot_id == floe_id == snapshot.snapshot_id
    assert floe_snap.parent_snapshot_id == spark_head.snapshot_id
    assert floe_snap.sequence_number == spark_head.sequence_number + 1
    summary, before = floe_snap.summary, spark_head.summary
    assert summary is not None and before is not None
    for key in ("total-delete-files", "total-position-deletes", "total-equality-deletes"):
        assert summary[key] == before[key], key
    assert int(summary["total-records"]) == int(before["total-records"]) + 550
    if case.merge:
        data_manifests = [m for m in floe_snap.manifests(table.io) if m.content == ManifestContent.DATA]
        assert len(data_manifests) == 1, [m.manifest_path for m in data_manifests]

    floe_rows = sorted(spark_rows + expected(*floe_parts), key=lambda r: r["id"])
    after_rows = [r for r in floe_rows if r["id"] % 11 != 0]
    # Spark reads it all, then deletes rows from Floe's files too (its RowDelta reads Floe's manifests)
    read_back = spark.run(
        spark_catalog,
        [
            read(ident, spark_head.snapshot_id),
            read(ident),
            {"sql": f"SELECT count(*) AS files, sum(record_count) AS records FROM {full}.data_files"},
            {"sql": f"SELECT count(*) AS files, sum(record_count) AS deletes FROM {full}.delete_files"},
            {"sql": f"DELETE FROM {full} WHERE id % 11 = 0"},
            read(ident),
            {"sql": f"SELECT * FROM {full}.snapshots"},
        ],
    )
    at_spark_head, at_floe, data_files, delete_files, _, after_delete, snapshots = read_back
    history = lineage(snapshots)
    assert_rows(at_spark_head, spark_rows, "Spark, as of its own last snapshot")
    assert_rows(at_floe, floe_rows, "Spark, as of Floe's commit")
    assert data_files == [{"files": int(summary["total-data-files"]), "records": int(summary["total-records"])}]
    assert delete_files == [
        {"files": int(summary["total-delete-files"]), "deletes": int(summary["total-position-deletes"])}
    ]
    assert_rows(after_delete, after_rows, "Spark, after its DELETE over Floe's commit")
    assert [h["operation"] for h in history[-2:]] == ["append", "delete"]
    assert history[-2]["snapshot_id"] == floe_id and history[-1]["parent_id"] == floe_id

    # and pyiceberg reads the same rows at both snapshots
    table = cat.load_table(ident)
    assert_rows(pyiceberg_rows(table, floe_id), floe_rows, "pyiceberg, as of Floe's commit")
    assert_rows(pyiceberg_rows(table), after_rows, "pyiceberg, after Spark's DELETE over Floe's commit")


# --- c. Spark reads a table whose schema a Floe job evolved ----------------------------------------


@ON_POSTGRES
@pytest.mark.timeout(300)
def test_spark_reads_the_schema_a_floe_job_evolved(spark: SparkEngine, catalog: CatalogHandle, tmp_path: Path) -> None:
    """Schema mode evolve (issue 17): two tasks add columns (one both meet), a struct field and a list,
    and widen int→long, float→double and a decimal's precision; Spark reads the old row's new columns
    as null and every new value whole."""
    cat = catalog.catalog
    ident = catalog.identifier("evolved")
    table = cat.create_table(ident, schema=WIDE)
    table.append(pa.Table.from_pylist([OLD_ROW], schema=table.schema().as_arrow()))
    table = cat.load_table(ident)
    snapshot = begin_distributed_snapshot(table)
    parquet = tmp_path / "h1" / "a.parquet"
    parquet.parent.mkdir()
    pq.write_table(pa.table({
        "id": pa.array([10], pa.int64()),
        "n": pa.array([2**40], pa.int64()),
        "f": pa.array([0.25], pa.float64()),
        "dec": pa.array([Decimal("123456789012.25")], pa.decimal128(14, 2)),
        "s": pa.array([{"a": "x", "b": 5}], pa.struct([("a", pa.string()), ("b", pa.int64())])),
        "score": pa.array([1], pa.int64()),
        "tags": pa.array([["t1", "t2"]], pa.list_(pa.string())),
    }), parquet)  # fmt: skip
    jsonl = tmp_path / "h2" / "b.jsonl"
    jsonl.parent.mkdir()
    jsonl.write_text('{"id": 20, "score": 3, "label": "twenty"}\n')
    manifests = [
        m
        for i, source in enumerate((parquet, jsonl))
        if (m := write_task_manifest(snapshot, table, [source], f"t{i}", schema_mode=SchemaMode.EVOLVE)) is not None
    ]
    committed = commit(table, snapshot, manifests, "job-evolve")
    table = cat.load_table(ident)
    assert table.metadata.snapshot_by_id(committed).schema_id == table.metadata.current_schema_id  # type: ignore[union-attr]

    (got,) = spark.run(jdbc_catalog(catalog), [read(ident)])
    assert got == [
        {"id": 0, "n": 7, "f": 1.5, "dec": "1.25", "s": {"a": "old", "b": None}, "score": None, "tags": None,
         "label": None},
        {"id": 10, "n": 2**40, "f": 0.25, "dec": "123456789012.25", "s": {"a": "x", "b": 5}, "score": 1,
         "tags": ["t1", "t2"], "label": None},
        {"id": 20, "n": None, "f": None, "dec": None, "s": None, "score": 3, "tags": None, "label": "twenty"},
    ]  # fmt: skip
    mine = sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["id"])
    assert [{**r, "dec": None if r["dec"] is None else str(r["dec"])} for r in mine] == got
