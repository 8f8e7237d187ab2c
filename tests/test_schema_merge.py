"""A job's new column merged into the same-named column another writer added while the job ran (issue 17,
schema mode evolve): the commit remaps the job's field ids to theirs by rewriting the job's data files
that carry them (app/iceberg/field_remap.py), exactly once, leaving no copy or original behind.

Driven as tests/test_schema_drift.py drives a job: the real gRPC API, job service, redis-server and SQLite
catalog; another writer is pyiceberg's ``update_schema`` and ``append`` on the same catalog.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.exceptions import CommitStateUnknownException
from pyiceberg.table import Table
from pyiceberg.types import IcebergType, IntegerType, LongType, NestedField, StringType, StructType

import app.iceberg.commit as commit_module
from app.iceberg.schema_change import index_fields
from app.proto_gen.api import common_pb2, coordinator_pb2
from tests.support.api_server import Api, call_fails
from tests.support.drift import completed, files_under, make_wide, parquet, run, start, status, table_rows
from tests.support.tables import local
from tests.test_outside_checks import _engine, _engine_available

pytestmark = pytest.mark.integration


def field_ids(path: Path) -> set[int]:
    """Every field id a Parquet file's schema carries (nested ones too)."""
    out: set[int] = set()

    def walk(f: pa.Field) -> None:
        if f.metadata and b"PARQUET:field_id" in f.metadata:
            out.add(int(f.metadata[b"PARQUET:field_id"]))
        t = f.type
        if pa.types.is_struct(t):
            for i in range(t.num_fields):
                walk(t.field(i))
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            walk(t.value_field)
        elif pa.types.is_map(t):
            walk(t.key_field)
            walk(t.item_field)

    for f in pq.read_schema(path):
        walk(f)
    return out


def referenced(table: Table) -> set[Path]:
    """The data files and manifests the table's current snapshot references."""
    snapshot = table.current_snapshot()
    assert snapshot is not None
    manifests = list(snapshot.manifests(table.io))
    data = {local(t.file.file_path) for t in table.scan().plan_files()}
    return data | {local(m.manifest_path) for m in manifests}


def job_files(api: Api, job_id: str) -> tuple[set[Path], set[Path]]:
    """The job's original data files and manifest files (a manifest kept inline has none)."""
    manifests = api.service.store.manifests(job_id)
    return (
        {local(p) for m in manifests for p in m.data_files},
        {local(m.manifest_path) for m in manifests if m.inline is None},
    )


def reserved(api: Api, job_id: str) -> dict[str, int]:
    return {f.name: f.field_id for m in api.service.store.manifests(job_id) for f in m.schema_change.added}


def commit(api: Api, job_id: str) -> coordinator_pb2.CommitJobResponse:
    return api.coordinator.CommitJob(coordinator_pb2.CommitJobRequest(job_id=job_id), timeout=60)


def theirs(api: Api, name: str | tuple[str, ...], t: IcebergType, row: dict[str, Any]) -> Table:
    """Another writer adds a column and appends a row holding it."""
    other = api.catalog.load_table("demo.events")
    with other.update_schema() as update:
        update.add_column(name, t)
    other = api.catalog.load_table("demo.events")
    other.append(pa.Table.from_pylist([row], schema=other.schema().as_arrow()))
    return api.catalog.load_table("demo.events")


def check_clean(table: Table, originals: set[Path]) -> None:
    """No original is left, every file the snapshot references carries only the table's field ids, and
    every rewritten copy on disk is referenced."""
    refs = referenced(table)
    assert not any(p.exists() for p in originals)
    assert not refs & originals
    ids = set(index_fields(table.schema()))
    for p in refs:
        if p.suffix == ".parquet":
            assert field_ids(p) <= ids, p
        if p.suffix == ".parquet" and "-remapped" in p.name:  # written as the table asks (zstd by default)
            assert pq.ParquetFile(p).metadata.row_group(0).column(0).compression == "ZSTD"
    stray = {p for p in files_under(table) if "-remapped" in p.name} - refs
    assert not stray


# --- same name, compatible type: merged ----------------------------------------------------------------


def test_a_column_of_the_same_name_and_type_is_merged_into_theirs(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10, 11], pa.int64()), "score": pa.array([1, 2], pa.int64())})
    job_id = start(api, {"h1": "*.parquet"}, "evolve", auto_commit=False)
    run(api, job_id, tmp_path)
    ours = reserved(api, job_id)["score"]
    data, manifests = job_files(api, job_id)
    assert all(ours in field_ids(p) for p in data)

    table = theirs(api, "score", LongType(), {"id": 5, "score": 50})
    their_id = table.schema().find_field("score").field_id
    assert their_id != ours
    assert not commit(api, job_id).already_committed
    completed(api, job_id)

    table = api.catalog.load_table("demo.events")
    assert [f.name for f in table.schema().fields].count("score") == 1
    assert table.schema().find_field("score").field_id == their_id
    assert [(r["id"], r["score"]) for r in table_rows(api)] == [(0, None), (5, 50), (10, 1), (11, 2)]
    # the copies' statistics are keyed by the table's id: a filter on score prunes by them and keeps our rows
    assert table.scan(row_filter="score = 2").to_arrow().column("id").to_pylist() == [11]
    copies = [t.file for t in table.scan().plan_files() if "-remapped" in t.file.file_path]
    assert copies and all(their_id in (d.lower_bounds or {}) for d in copies)
    assert not [t for t in table.scan(row_filter="score = 999").plan_files() if "-remapped" in t.file.file_path]
    check_clean(table, data | manifests)
    for p in referenced(table):
        if p.suffix == ".parquet":
            assert ours not in field_ids(p)
    # CommitJob again: already committed, nothing added
    snapshots, schemas = len(table.metadata.snapshots), len(table.metadata.schemas)
    assert commit(api, job_id).already_committed
    table = api.catalog.load_table("demo.events")
    assert (len(table.metadata.snapshots), len(table.metadata.schemas)) == (snapshots, schemas)


@pytest.mark.parametrize(
    ("their_type", "source", "rows"),
    [
        (IntegerType(), pa.array([2**40, 3], pa.int64()), [(5, 50), (10, 2**40), (11, 3)]),  # ours wider: widened
        (LongType(), pa.array([1, 2], pa.int32()), [(5, 2**40), (10, 1), (11, 2)]),  # theirs wider: read promoted
    ],
)
def test_a_column_of_the_same_name_and_a_wider_or_narrower_type_is_merged_at_the_wider(
    api: Api, tmp_path: Path, their_type: IcebergType, source: pa.Array, rows: list[tuple[int, int]]
) -> None:
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10, 11], pa.int64()), "score": source})
    job_id = start(api, {"h1": "*.parquet"}, "evolve", auto_commit=False)
    run(api, job_id, tmp_path)
    data, manifests = job_files(api, job_id)
    table = theirs(api, "score", their_type, {"id": 5, "score": rows[0][1]})
    their_id = table.schema().find_field("score").field_id
    commit(api, job_id)
    completed(api, job_id)

    table = api.catalog.load_table("demo.events")
    score = table.schema().find_field("score")
    assert (score.field_id, score.field_type) == (their_id, LongType())
    assert [(r["id"], r["score"]) for r in table_rows(api) if r["id"]] == rows
    assert table.scan(row_filter=f"score = {rows[2][1]}").to_arrow().column("id").to_pylist() == [11]
    check_clean(table, data | manifests)


def test_structs_of_the_same_name_merge_by_name_and_our_extra_children_join_theirs(
    api: Api, tmp_path: Path
) -> None:
    make_wide(api)
    t_type = pa.struct([("a", pa.string()), ("c", pa.int64())])
    s_type = pa.struct([("a", pa.string()), ("b", pa.int64())])
    parquet(tmp_path / "h1" / "a.parquet", {
        "id": pa.array([10], pa.int64()),
        "s": pa.array([{"a": "x", "b": 2}], s_type),
        "t": pa.array([{"a": "ours", "c": 3}], t_type),
    })  # fmt: skip
    job_id = start(api, {"h1": "*.parquet"}, "evolve", auto_commit=False)
    run(api, job_id, tmp_path)
    ours = reserved(api, job_id)
    data, manifests = job_files(api, job_id)
    other = api.catalog.load_table("demo.events")
    with other.update_schema() as update:
        update.add_column(("s", "b"), LongType())
        update.add_column("t", StructType(NestedField(1, "a", StringType(), required=False)))
    table = api.catalog.load_table("demo.events")
    table.append(pa.Table.from_pylist([{"id": 5, "s": {"a": "y", "b": 7}, "t": {"a": "theirs"}}],
                                      schema=table.schema().as_arrow()))  # fmt: skip
    before = table.schema()
    commit(api, job_id)
    completed(api, job_id)

    schema = api.catalog.load_table("demo.events").schema()
    t = schema.find_field("t")
    assert isinstance(t.field_type, StructType)
    assert [(f.name, f.field_type) for f in t.field_type.fields] == [("a", StringType()), ("c", LongType())]
    for kept in ("t", "t.a", "s.b"):
        assert schema.find_field(kept).field_id == before.find_field(kept).field_id
    assert schema.find_field("t.c").field_id == ours["c"]  # our extra child keeps its reserved id
    got = {r["id"]: (r["s"], r["t"]) for r in table_rows(api)}
    assert got == {
        0: ({"a": "old", "b": None}, None),
        5: ({"a": "y", "b": 7}, {"a": "theirs", "c": None}),
        10: ({"a": "x", "b": 2}, {"a": "ours", "c": 3}),
    }
    check_clean(api.catalog.load_table("demo.events"), data | manifests)


@pytest.mark.parametrize("engine", ["iceberg-rust", "duckdb"])
def test_outside_readers_read_a_merged_column(api: Api, tmp_path: Path, engine: str) -> None:
    _engine_available(engine)
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "score": pa.array([2**40], pa.int64()),
                                            "t": pa.array([{"a": "ours", "c": 3}], pa.struct([("a", pa.string()), ("c", pa.int64())]))})  # fmt: skip
    job_id = start(api, {"h1": "*.parquet"}, "evolve", auto_commit=False)
    run(api, job_id, tmp_path)
    other = api.catalog.load_table("demo.events")
    with other.update_schema() as update:
        update.add_column("score", IntegerType())
        update.add_column("t", StructType(NestedField(1, "a", StringType(), required=False)))
    other = api.catalog.load_table("demo.events")
    other.append(pa.Table.from_pylist([{"id": 5, "score": 50, "t": {"a": "theirs"}}], schema=other.schema().as_arrow()))
    commit(api, job_id)
    completed(api, job_id)
    metadata = api.catalog.load_table("demo.events").metadata_location
    # iceberg-rust (pyiceberg-core 0.10) fails on any file whose struct lacks a child added later, merge or
    # not (their row's t has no c): it reads the top-level columns here
    columns = "id, score, t.a AS a, t.c AS c" if engine == "duckdb" else "id, score"
    (got,) = _engine(engine, metadata, f"SELECT {columns} FROM t ORDER BY id")
    want: list[dict[str, Any]] = [
        {"id": 0, "score": None, "a": None, "c": None},
        {"id": 5, "score": 50, "a": "theirs", "c": None},
        {"id": 10, "score": 2**40, "a": "ours", "c": 3},
    ]
    assert got == [{k: v for k, v in row.items() if k in got[0]} for row in want], engine


# --- failures in between: no copy left behind, exactly once ---------------------------------------------


def test_an_attempt_the_catalog_refuses_deletes_its_copies_and_the_rebased_commit_lands_once(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "score": pa.array([1], pa.int64())})
    job_id = start(api, {"h1": "*.parquet"}, "evolve", auto_commit=False)
    run(api, job_id, tmp_path)
    data, manifests = job_files(api, job_id)
    table = theirs(api, "score", LongType(), {"id": 5, "score": 50})

    cat = api.catalog
    real_commit = cat.commit_table
    state: dict[str, Any] = {"left": 1, "busy": False, "between": []}

    def interfering(tbl, requirements, updates):  # type: ignore[no-untyped-def]
        # another writer appends just before our first attempt reaches the catalog: it conflicts
        if state["left"] and not state["busy"]:
            state["left"], state["busy"] = 0, True
            fresh = cat.load_table("demo.events")
            fresh.append(pa.Table.from_pylist([{"id": 6, "score": 60}], schema=fresh.schema().as_arrow()))
            state["busy"] = False
        return real_commit(tbl, requirements, updates)

    def between_attempts(seconds: float) -> None:  # what the refused attempt left on disk
        state["between"].append({p for p in files_under(table) if "-remapped" in p.name})

    monkeypatch.setattr(cat, "commit_table", interfering)
    monkeypatch.setattr(commit_module, "time", SimpleNamespace(monotonic=commit_module.time.monotonic, sleep=between_attempts))
    commit(api, job_id)
    monkeypatch.undo()
    completed(api, job_id)
    assert state["between"] == [set()]  # the refused attempt deleted its copies before the retry

    table = api.catalog.load_table("demo.events")
    assert [(r["id"], r["score"]) for r in table_rows(api)] == [(0, None), (5, 50), (6, 60), (10, 1)]
    assert [s.summary.get("floe.job-id") for s in table.metadata.snapshots if s.summary].count(job_id) == 1
    check_clean(table, data | manifests)
    assert commit(api, job_id).already_committed


def test_a_job_failing_after_an_attempt_of_unknown_outcome_leaves_no_copy(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "score": pa.array([1], pa.int64())})
    job_id = start(api, {"h1": "*.parquet"}, "evolve", auto_commit=False)
    run(api, job_id, tmp_path)
    data, manifests = job_files(api, job_id)
    theirs(api, "score", LongType(), {"id": 5, "score": 50})

    def never_lands(tbl, requirements, updates):  # type: ignore[no-untyped-def]
        raise CommitStateUnknownException("timed out waiting for the catalog")

    monkeypatch.setattr(api.catalog, "commit_table", never_lands)
    call_fails(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=job_id),
               grpc.StatusCode.UNAVAILABLE, "unknown outcome")  # fmt: skip
    monkeypatch.undo()
    table = api.catalog.load_table("demo.events")
    copies = {p for p in files_under(table) if "-remapped" in p.name}
    assert copies and all(p.exists() for p in data | manifests)  # an unknown outcome deletes nothing

    # meanwhile their score becomes a string: the job cannot be merged any more and fails
    with table.update_schema() as update:
        update.delete_column("score")
    with api.catalog.load_table("demo.events").update_schema() as update:
        update.add_column("score", StringType())
    call_fails(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=job_id),
               grpc.StatusCode.FAILED_PRECONDITION, r"column 'score' was added by another writer")  # fmt: skip
    assert common_pb2.JobState.Name(status(api, job_id).state) == "FAILED"
    table = api.catalog.load_table("demo.events")
    assert not {p for p in files_under(table) if "-remapped" in p.name}
    assert not any(p.exists() for p in data | manifests)


def test_a_merge_found_landed_after_an_unknown_outcome_or_by_the_sweep_still_deletes_the_originals(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "score": pa.array([1], pa.int64())})
    parquet(tmp_path / "h2" / "b.parquet", {"id": pa.array([20], pa.int64()), "extra": ["ours"]})
    first = start(api, {"h1": "*.parquet"}, "evolve", auto_commit=False)
    run(api, first, tmp_path)
    theirs(api, "score", LongType(), {"id": 5, "score": 50})
    real_commit = api.catalog.commit_table

    def lands_then_raises(tbl, requirements, updates):  # type: ignore[no-untyped-def]
        real_commit(tbl, requirements, updates)
        raise CommitStateUnknownException("connection reset after the catalog applied the commit")

    # the catalog applies the commit and the answer is lost: the committer finds it on main
    data, manifests = job_files(api, first)
    monkeypatch.setattr(api.catalog, "commit_table", lands_then_raises)
    commit(api, first)
    monkeypatch.undo()
    completed(api, first)
    check_clean(api.catalog.load_table("demo.events"), data | manifests)

    # a committer that dies between completing the job and its deletes: beat's sweep does them
    second = start(api, {"h2": "*.parquet"}, "evolve", auto_commit=False)
    run(api, second, tmp_path)
    data, manifests = job_files(api, second)
    theirs(api, "extra", StringType(), {"id": 6, "extra": "theirs"})
    monkeypatch.setattr(api.service.files, "after_commit", lambda *args: None)
    commit(api, second)
    monkeypatch.undo()
    completed(api, second)
    assert all(p.exists() for p in data | manifests)  # nothing deleted yet
    assert api.service.files.sweep(now=time.time() + 3600) == [second]
    table = api.catalog.load_table("demo.events")
    check_clean(table, data | manifests)
    got = [(r["id"], r["score"], r["extra"]) for r in table_rows(api)]
    assert got == [(0, None, None), (5, 50, None), (6, None, "theirs"), (10, 1, None), (20, None, "ours")]


def test_a_reserved_id_another_writer_took_moves_to_a_fresh_id(api: Api, tmp_path: Path) -> None:
    table = make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "score": pa.array([1], pa.int64())})
    job_id = start(api, {"h1": "*.parquet"}, "evolve", auto_commit=False)
    run(api, job_id, tmp_path)
    ours = reserved(api, job_id)["score"]
    data, manifests = job_files(api, job_id)
    # another writer adds columns until one of them gets the id reserved for ours
    with table.update_schema() as update:
        for i in range(ours - table.metadata.last_column_id):
            update.add_column(f"c{i}", StringType())
    table = api.catalog.load_table("demo.events")
    assert table.schema().find_column_name(ours) != "score"
    commit(api, job_id)
    completed(api, job_id)

    table = api.catalog.load_table("demo.events")
    assert table.schema().find_field("score").field_id == ours + 1  # fresh: above the last column id
    assert [(r["id"], r["score"], r["c0"]) for r in table_rows(api)] == [(0, None, None), (10, 1, None)]
    check_clean(table, data | manifests)
