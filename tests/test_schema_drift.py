"""Sources whose columns drift (issue 17), through the real gRPC API, job service, redis-server and
catalog: the tasks the job registers are run as the Celery task runs them (workers.task_runner.run_task),
one settings (WORKER_DATA_BASE) per host; tests/test_system_schema_drift.py runs the real stack.

Schema modes: strict (the default) refuses source columns the table lacks and leaves no file behind;
evolve adds them (one field id per column, agreed through Redis by every host) and widens types,
in the job's one commit; ignore leaves them out. Old data files read null for the new columns, in
pyiceberg, iceberg-rust and DuckDB.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import (
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    StructType,
)

from app.errors import InvalidArgument, SourceError
from app.iceberg.schema_evolution import RESERVED_ID_GAP, LocalFieldIds, SchemaMode
from app.proto_gen.api import common_pb2, coordinator_pb2
from app.settings import Settings
from tests.support.api_server import Api, call_fails, start_request
from tests.test_outside_checks import _engine, _engine_available
from workers.conversion import write_task_manifest
from workers.task_runner import run_task

pytestmark = pytest.mark.integration
INVALID = grpc.StatusCode.INVALID_ARGUMENT

WIDE = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "n", IntegerType()),
    NestedField(3, "f", FloatType()),
    NestedField(4, "dec", DecimalType(10, 2)),
    NestedField(5, "s", StructType(NestedField(6, "a", StringType()))),
)
OLD_ROW = {"id": 0, "n": 7, "f": 1.5, "dec": Decimal("1.25"), "s": {"a": "old"}}


def make_wide(api: Api, properties: dict[str, str] | None = None) -> Table:
    """demo.events in WIDE, holding one row written before the job (an old data file)."""
    table = api.catalog.create_table("demo.events", schema=WIDE, properties=properties or {})
    table.append(pa.Table.from_pylist([OLD_ROW], schema=table.schema().as_arrow()))
    return api.catalog.load_table("demo.events")


def parquet(path: Path, columns: dict[str, pa.Array | list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def settings(tmp_path: Path, host: str) -> Settings:
    env = {"FLOE_HOME": str(tmp_path / "home"), "WORKER_DATA_BASE": str(tmp_path / host), "PATH": os.defpath}
    return Settings.from_env(env)


def start(api: Api, tasks: dict[str, str], mode: str = "", **extra: Any) -> str:
    """A job of one task per host (task id = host, reading the host's ``tasks[host]`` glob)."""
    data: dict[str, Any] = {
        "tasks": [{"task_id": h, "host": h, "paths": [g]} for h, g in tasks.items()],
        **extra,
    }
    if mode:
        data["schema_mode"] = f"SCHEMA_MODE_{mode.upper()}"
    return api.coordinator.StartJob(start_request(**data)).job_id


def run(api: Api, job_id: str, tmp_path: Path, order: list[str] | None = None) -> None:
    """Run the job's registered tasks, each on its own host, as the Celery task does."""
    tasks = {t.task_id: t for t in api.service.store.tasks(job_id)}
    for task_id in order or sorted(tasks):
        try:
            run_task(api.service, job_id, task_id, settings(tmp_path, tasks[task_id].host))
        except SourceError as exc:  # what IngestTask.on_failure does with a permanent error
            api.service.task_failed(job_id, task_id, str(exc), permanent=True)


def status(api: Api, job_id: str) -> common_pb2.JobStatus:
    return api.coordinator.GetJobStatus(coordinator_pb2.GetJobStatusRequest(job_id=job_id), timeout=10)


def completed(api: Api, job_id: str) -> common_pb2.JobStatus:
    s = status(api, job_id)
    assert common_pb2.JobState.Name(s.state) == "COMPLETED", s.failure_reason
    return s


def table_rows(api: Api) -> list[dict[str, Any]]:
    return api.catalog.load_table("demo.events").scan().to_arrow().sort_by("id").to_pylist()


def files_under(table: Table) -> set[Path]:
    return {p for p in Path(table.location().removeprefix("file://")).rglob("*") if p.is_file()}


def added_ids(api: Api, job_id: str) -> dict[str, dict[str, int]]:
    """Per task, the field id each of its descriptor's new fields was written with."""
    return {
        m.task_id: {f.name: f.field_id for f in m.schema_change.added}
        for m in api.service.store.manifests(job_id)
    }


# --- evolve: new columns -------------------------------------------------------------------------------


def test_both_hosts_meet_the_same_new_column_and_write_it_under_one_id(api: Api, tmp_path: Path) -> None:
    table = make_wide(api)
    last = table.metadata.last_column_id
    parquet(
        tmp_path / "h1" / "a.parquet",
        {"id": pa.array([10, 11], pa.int64()), "score": pa.array([1, 2], pa.int64())},
    )
    (tmp_path / "h2").mkdir()
    (tmp_path / "h2" / "b.csv").write_text("id,score\n20,3\n21,4\n")
    job_id = start(api, {"h1": "*.parquet", "h2": "*.csv"}, "evolve")
    assert status(api, job_id).schema_mode == common_pb2.SCHEMA_MODE_EVOLVE
    run(api, job_id, tmp_path)
    completed(api, job_id)

    table = api.catalog.load_table("demo.events")
    score = table.schema().find_field("score")
    assert (
        score.field_id == last + RESERVED_ID_GAP + 1 and score.field_type == LongType() and not score.required
    )
    assert added_ids(api, job_id) == {"h1": {"score": score.field_id}, "h2": {"score": score.field_id}}
    # the schema was added once, made current in the job's snapshot, and the old row reads null
    assert len(table.metadata.schemas) == 2
    assert table.current_snapshot().schema_id == table.metadata.current_schema_id  # type: ignore[union-attr]
    assert [(r["id"], r["score"]) for r in table_rows(api)] == [(0, None), (10, 1), (11, 2), (20, 3), (21, 4)]


def test_two_hosts_add_two_different_columns(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "alpha": ["a10"]})
    parquet(tmp_path / "h2" / "b.parquet", {"id": pa.array([20], pa.int64()), "beta": pa.array([2.5])})
    job_id = start(api, {"h1": "*.parquet", "h2": "*.parquet"}, "evolve")
    run(api, job_id, tmp_path)
    completed(api, job_id)

    schema = api.catalog.load_table("demo.events").schema()
    alpha, beta = schema.find_field("alpha"), schema.find_field("beta")
    assert (alpha.field_type, beta.field_type) == (
        StringType(),
        DoubleType(),
    ) and alpha.field_id != beta.field_id
    assert added_ids(api, job_id) == {"h1": {"alpha": alpha.field_id}, "h2": {"beta": beta.field_id}}
    got = [(r["id"], r["alpha"], r["beta"]) for r in table_rows(api)]
    assert got == [(0, None, None), (10, "a10", None), (20, None, 2.5)]


def test_new_fields_inside_structs_lists_and_new_struct_columns(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    s_type = pa.struct([("a", pa.string()), ("b", pa.int64())])
    meta_type = pa.struct([("k", pa.string()), ("v", pa.float64())])
    parquet(tmp_path / "h1" / "a.parquet", {
        "id": pa.array([10], pa.int64()),
        "s": pa.array([{"a": "x", "b": 5}], s_type),
        "meta": pa.array([{"k": "key", "v": 0.5}], meta_type),
        "tags": pa.array([["t1", "t2"]], pa.list_(pa.string())),
    })  # fmt: skip
    (tmp_path / "h2").mkdir()
    (tmp_path / "h2" / "b.jsonl").write_text('{"id": 20, "s": {"a": "y", "c": "new"}, "meta": {"k": "k2"}}\n')
    job_id = start(api, {"h1": "*.parquet", "h2": "*.jsonl"}, "evolve")
    run(api, job_id, tmp_path)
    completed(api, job_id)

    schema = api.catalog.load_table("demo.events").schema()
    s = schema.find_field("s").field_type
    assert isinstance(s, StructType) and [(f.name, f.field_type) for f in s.fields] == [
        ("a", StringType()), ("b", LongType()), ("c", StringType())
    ]  # fmt: skip
    meta = schema.find_field("meta").field_type
    assert isinstance(meta, StructType) and [f.name for f in meta.fields] == ["k", "v"]
    tags = schema.find_field("tags").field_type
    assert isinstance(tags, ListType) and tags.element_type == StringType()
    # both hosts met meta and meta.k: one id each
    ids = added_ids(api, job_id)
    assert ids["h1"]["meta"] == ids["h2"]["meta"] and ids["h1"]["k"] == ids["h2"]["k"]
    got = {r["id"]: (r["s"], r["meta"], r["tags"]) for r in table_rows(api)}
    assert got == {
        0: ({"a": "old", "b": None, "c": None}, None, None),
        10: ({"a": "x", "b": 5, "c": None}, {"k": "key", "v": 0.5}, ["t1", "t2"]),
        20: ({"a": "y", "b": None, "c": "new"}, {"k": "k2", "v": None}, None),
    }


# --- evolve: widening, and what cannot be widened ------------------------------------------------------


def test_each_promotion_widens_the_column_and_keeps_every_value(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {
        "id": pa.array([10], pa.int64()),
        "n": pa.array([2**40], pa.int64()),  # int -> long
        "f": pa.array([1.1], pa.float64()),  # float -> double
        "dec": pa.array([Decimal("123456789012.25")], pa.decimal128(14, 2)),  # decimal(10, 2) -> decimal(14, 2)
    })  # fmt: skip
    job_id = start(api, {"h1": "*.parquet"}, "evolve")
    run(api, job_id, tmp_path)
    completed(api, job_id)

    schema = api.catalog.load_table("demo.events").schema()
    assert [schema.find_field(c).field_type for c in ("n", "f", "dec")] == [
        LongType(),
        DoubleType(),
        DecimalType(14, 2),
    ]
    got = [(r["id"], r["n"], r["f"], r["dec"]) for r in table_rows(api)]
    assert got == [(0, 7, 1.5, Decimal("1.25")), (10, 2**40, 1.1, Decimal("123456789012.25"))]


def test_text_sources_widen_a_column_by_its_values(api: Api, tmp_path: Path) -> None:
    """CSV and JSON lines carry no types: a value beyond an int column's range, or with more digits than
    its decimal's precision, widens it in evolve (and fails the task in strict). The CSV meets its big
    values after several MiB: what the task wrote before goes on as int, the rest as long."""
    make_wide(api)
    (tmp_path / "h1").mkdir()
    csv = tmp_path / "h1" / "a.csv"
    many = range(100, 300_100)
    csv.write_text("id,n,dec\n" + "".join(f"{i},{i},1.5\n" for i in many) + "11,3000000000,123456789012.25\n")
    (tmp_path / "h2").mkdir()
    (tmp_path / "h2" / "b.jsonl").write_text('{"id": 20, "n": 5, "dec": 2.5}\n{"id": 21, "n": -5000000000}\n')
    strict = start(api, {"h1": "*.csv"})
    run(api, strict, tmp_path)
    reason = status(api, strict).failure_reason
    assert reason.startswith(f"task h1 failed: {csv}: column 'n' cannot be cast from string to int"), reason

    job_id = start(api, {"h1": "*.csv", "h2": "*.jsonl"}, "evolve")
    run(api, job_id, tmp_path)
    assert completed(api, job_id).files_written >= 3  # h1: int files, then long files; h2: one
    table = api.catalog.load_table("demo.events")
    schema = table.schema()
    assert (schema.find_field("n").field_type, schema.find_field("dec").field_type) == (
        LongType(),
        DecimalType(14, 2),
    )
    got = [(r["id"], r["n"], r["dec"]) for r in table_rows(api) if r["id"] < 100]
    assert got == [
        (0, 7, Decimal("1.25")), (11, 3_000_000_000, Decimal("123456789012.25")),
        (20, 5, Decimal("2.50")), (21, -5_000_000_000, None),
    ]  # fmt: skip
    n = table.scan(row_filter="id >= 100", selected_fields=("n",)).to_arrow().column("n")
    assert (len(n), pa.compute.sum(n).as_py()) == (len(many), sum(many))


@pytest.mark.parametrize(
    ("column", "values", "source_type", "table_type"),
    [
        ("n", pa.array([1.5]), "double", "int"),
        ("dec", pa.array([Decimal("1.2345")], pa.decimal128(10, 4)), "decimal(10, 4)", "decimal(10, 2)"),
        ("f", pa.array([Decimal("1.5")], pa.decimal128(5, 1)), "decimal(5, 1)", "float"),
    ],
)
def test_a_narrowing_is_refused_naming_the_column_and_both_types(
    api: Api, tmp_path: Path, column: str, values: pa.Array, source_type: str, table_type: str
) -> None:
    table = make_wide(api)
    before = files_under(table)
    path = parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), column: values})
    job_id = start(api, {"h1": "*.parquet"}, "evolve")
    run(api, job_id, tmp_path)
    s = status(api, job_id)
    assert common_pb2.JobState.Name(s.state) == "FAILED"
    assert s.failure_reason == (
        f"task h1 failed: {path}: column '{column}' is {source_type} in the source but {table_type} in the table, "
        f"and Iceberg cannot change {table_type} to {source_type} (it widens int to long, float to double, "
        "a decimal's precision up at the same scale)"
    )
    assert files_under(api.catalog.load_table("demo.events")) == before


def test_a_new_column_met_with_two_types_that_cannot_be_reconciled_fails(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    parquet(
        tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "score": pa.array([1], pa.int64())}
    )
    path = parquet(tmp_path / "h2" / "b.parquet", {"id": pa.array([20], pa.int64()), "score": ["high"]})
    job_id = start(api, {"h1": "*.parquet", "h2": "*.parquet"}, "evolve")
    run(api, job_id, tmp_path, order=["h1", "h2"])
    s = status(api, job_id)
    assert common_pb2.JobState.Name(s.state) == "FAILED"
    assert s.failure_reason.startswith(
        f"task h2 failed: {path}: column 'score' is string here, but the job added it as long (reserved by the task "
        "that met it first), and Iceberg cannot change long to string"
    ), s.failure_reason


def test_a_json_key_first_met_after_discovery_is_refused_in_evolve(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    (tmp_path / "h1").mkdir()
    path = tmp_path / "h1" / "a.jsonl"
    path.write_text("".join(f'{{"id": {i}, "early": "e"}}\n' for i in range(1, 150_000)) + '{"id": 0, "late": 1}\n')
    job_id = start(api, {"h1": "*.jsonl"}, "evolve")
    run(api, job_id, tmp_path)
    assert status(api, job_id).failure_reason == (
        f"task h1 failed: {path}: the table has no column(s) 'late', and the task did not find them when it "
        "discovered the file's columns (a JSON-lines file's are found in its first 4 MiB); nothing was added: "
        "put a line holding every key first"
    )


# --- strict, ignore, and the table property ------------------------------------------------------------


def test_strict_is_the_default_and_leaves_no_file_behind(api: Api, tmp_path: Path) -> None:
    table = make_wide(api)
    before = files_under(table)
    snapshot_before = table.metadata.current_snapshot_id
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array(range(10, 20), pa.int64())})  # fits the table
    bad = parquet(tmp_path / "h2" / "b.parquet", {"id": pa.array([20], pa.int64()), "extra": ["x"], "s": pa.array(
        [{"a": "y", "z": 1}], pa.struct([("a", pa.string()), ("z", pa.int64())]))})  # fmt: skip
    job_id = start(api, {"h1": "*.parquet", "h2": "*.parquet"})
    assert status(api, job_id).schema_mode == common_pb2.SCHEMA_MODE_STRICT
    run(api, job_id, tmp_path, order=["h1", "h2"])  # h1's data files and manifest are written first

    s = status(api, job_id)
    assert common_pb2.JobState.Name(s.state) == "FAILED" and s.manifests_accepted == 1
    assert s.failure_reason == (
        f"task h2 failed: {bad}: the table has no column(s) 'extra' (string), 's.z' (long); the job's schema mode "
        "is strict (start the job with schema mode evolve to add them to the table, or ignore to leave them out)"
    )
    table = api.catalog.load_table("demo.events")
    assert table.metadata.current_snapshot_id == snapshot_before and len(table.metadata.schemas) == 1
    assert files_under(table) == before  # h1's files were deleted with the job


def test_ignore_leaves_the_extra_columns_out(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    (tmp_path / "h1").mkdir()
    (tmp_path / "h1" / "a.csv").write_text("id,extra,n\n10,x,3\n")
    job_id = start(api, {"h1": "*.csv"}, "ignore")
    assert status(api, job_id).schema_mode == common_pb2.SCHEMA_MODE_IGNORE
    run(api, job_id, tmp_path)
    completed(api, job_id)
    table = api.catalog.load_table("demo.events")
    assert len(table.metadata.schemas) == 1 and table.schema().column_names == WIDE.column_names
    assert [(r["id"], r["n"]) for r in table_rows(api)] == [(0, 7), (10, 3)]


def test_the_table_property_sets_the_default_and_a_request_overrides_it(api: Api, tmp_path: Path) -> None:
    make_wide(api, {"floe.schema-mode": "evolve"})
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "extra": ["x"]})
    strict = start(api, {"h1": "*.parquet"}, "strict")
    run(api, strict, tmp_path)
    assert common_pb2.JobState.Name(status(api, strict).state) == "FAILED"
    job_id = start(api, {"h1": "*.parquet"})
    assert status(api, job_id).schema_mode == common_pb2.SCHEMA_MODE_EVOLVE
    run(api, job_id, tmp_path)
    completed(api, job_id)
    assert [(r["id"], r["extra"]) for r in table_rows(api)] == [(0, None), (10, "x")]


def test_a_bad_table_property_is_refused_precisely(api: Api) -> None:
    make_wide(api, {"floe.schema-mode": "sometimes"})
    call_fails(
        api.coordinator.StartJob,
        start_request(tasks=[{"task_id": "t1"}]),
        INVALID,
        r"^table default\.demo\.events property floe\.schema-mode='sometimes' is not a schema mode: "
        r"use strict, evolve or ignore$",
    )
    # a job that chooses its mode does not depend on the property
    assert api.coordinator.StartJob(
        start_request(tasks=[{"task_id": "t1"}], schema_mode="SCHEMA_MODE_IGNORE")
    ).job_id
    call_fails(
        api.coordinator.StartJob, start_request(schema_mode=7), INVALID, r"schema_mode=7 is not a SchemaMode"
    )


# --- exactly once: a redelivered task, a concurrent writer's schema change ------------------------------


def test_a_task_redelivered_after_its_reservation_writes_the_same_ids(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "score": pa.array([1], pa.int64()),
                                            "s": pa.array([{"a": "x", "b": 2}], pa.struct([("a", pa.string()), ("b", pa.int64())]))})  # fmt: skip
    job_id = start(api, {"h1": "*.parquet"}, "evolve")
    store, job = api.service.store, api.service.store.require(job_id)

    # the first delivery reserves its columns, writes its files and dies before recording its manifest
    def reserve(floor: int, requests: list[Any]) -> list[Any]:
        return store.reserve_fields(job_id, job.snapshot.table_uuid, floor, requests)

    first = write_task_manifest(
        job.snapshot, api.catalog.load_table("demo.events"), [tmp_path / "h1" / "a.parquet"], "h1",
        on_file=lambda *p: store.journal_file(job_id, *p), schema_mode=SchemaMode.EVOLVE, reserve=reserve,
    )  # fmt: skip
    assert first is not None and store.manifest(job_id, "h1") is None
    # the redelivery runs it all again: the same ids, one manifest recorded, the first attempt's files orphans
    run(api, job_id, tmp_path)
    completed(api, job_id)
    (recorded,) = store.manifests(job_id)
    assert recorded.schema_change == first.schema_change and recorded.manifest_path != first.manifest_path
    schema = api.catalog.load_table("demo.events").schema()
    assert {f.name: f.field_id for f in first.schema_change.added} == {
        "score": schema.find_field("score").field_id, "b": schema.find_field("s.b").field_id
    }  # fmt: skip
    assert not any(Path(p.removeprefix("file://")).exists() for p in (*first.data_files, first.manifest_path))
    assert [(r["id"], r["score"], r["s"]) for r in table_rows(api)] == [
        (0, None, {"a": "old", "b": None}), (10, 1, {"a": "x", "b": 2})
    ]  # fmt: skip


def test_a_concurrent_schema_change_is_kept_and_the_jobs_columns_added_on_top(
    api: Api, tmp_path: Path
) -> None:
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "score": pa.array([1], pa.int64()),
                                            "n": pa.array([2**40], pa.int64())})  # fmt: skip
    job_id = start(api, {"h1": "*.parquet"}, "evolve", auto_commit=False)
    run(api, job_id, tmp_path)  # the reservation is made and the files are written

    # another writer changes the schema and appends between the reservation and the commit
    other = api.catalog.load_table("demo.events")
    with other.update_schema() as update:
        update.add_column("theirs", StringType())
    other = api.catalog.load_table("demo.events")
    other.append(pa.Table.from_pylist([{"id": 5, "theirs": "t"}], schema=other.schema().as_arrow()))
    theirs_id = other.schema().find_field("theirs").field_id

    api.coordinator.CommitJob(coordinator_pb2.CommitJobRequest(job_id=job_id), timeout=60)
    completed(api, job_id)
    table = api.catalog.load_table("demo.events")
    schema = table.schema()
    assert schema.find_field("theirs").field_id == theirs_id  # kept
    assert (
        schema.find_field("score").field_id == theirs_id + RESERVED_ID_GAP
    )  # ours, reserved above theirs' range
    assert schema.find_field("n").field_type == LongType()
    got = [(r["id"], r["n"], r["theirs"], r["score"]) for r in table_rows(api)]
    assert got == [(0, 7, None, None), (5, None, "t", None), (10, 2**40, None, 1)]
    # CommitJob again: already committed, nothing added twice
    again = api.coordinator.CommitJob(coordinator_pb2.CommitJobRequest(job_id=job_id), timeout=60)
    assert again.already_committed
    assert len(api.catalog.load_table("demo.events").metadata.schemas) == len(table.metadata.schemas)


def test_a_concurrent_column_of_the_same_name_fails_the_job_and_its_files_go(
    api: Api, tmp_path: Path
) -> None:
    make_wide(api)
    parquet(
        tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "score": pa.array([1], pa.int64())}
    )
    job_id = start(api, {"h1": "*.parquet"}, "evolve", auto_commit=False)
    run(api, job_id, tmp_path)
    (manifest,) = api.service.store.manifests(job_id)
    job_files = {Path(p.removeprefix("file://")) for p in (*manifest.data_files, manifest.manifest_path)}
    other = api.catalog.load_table("demo.events")
    with other.update_schema() as update:
        update.add_column("score", StringType())
    after_theirs = files_under(api.catalog.load_table("demo.events"))
    assert job_files <= after_theirs

    call_fails(
        api.coordinator.CommitJob,
        coordinator_pb2.CommitJobRequest(job_id=job_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        r"column 'score' was added by another writer while the job ran \(field id \d+, string\); this job's data "
        r"files carry field id \d+ \(long\) for it, so the two cannot be merged",
    )
    s = status(api, job_id)
    assert common_pb2.JobState.Name(s.state) == "FAILED" and "column 'score'" in s.failure_reason
    table = api.catalog.load_table("demo.events")
    assert table.schema().find_field("score").field_type == StringType()
    assert files_under(table) == after_theirs - job_files  # the job's files went, nothing else


def test_a_manifest_may_add_only_the_columns_its_job_reserved(api: Api, tmp_path: Path) -> None:
    table = make_wide(api)
    path = parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "score": pa.array([1])})
    job_id = start(api, {"h1": "*.parquet"}, "evolve", auto_commit=False)
    ignoring = start(api, {"h1": "*.parquet"}, "ignore", auto_commit=False)
    store = api.service.store
    # manifests written with field ids the job store never handed out (reserved in this process only)
    for job, mode, message in (
        (job_id, "evolve", r"adds column 'score' as field id \d+, which the job did not reserve for it"),
        (ignoring, "ignore", r"changes the table's schema, but the job's schema mode is ignore"),
    ):
        snapshot = store.require(job).snapshot
        forged = write_task_manifest(
            snapshot, table, [path], "h1", schema_mode=SchemaMode.EVOLVE, reserve=LocalFieldIds()
        )
        assert forged is not None and forged.schema_change
        with pytest.raises(InvalidArgument, match=message):
            api.service.record_manifest(job, "h1", forged)
        assert store.manifest(job, "h1") is None, mode


# --- the outside readers --------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["iceberg-rust", "duckdb"])
def test_outside_readers_read_old_files_as_null_and_new_rows_whole(
    api: Api, tmp_path: Path, engine: str
) -> None:
    _engine_available(engine)
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {
        "id": pa.array([10], pa.int64()),
        "n": pa.array([2**40], pa.int64()),
        "f": pa.array([0.25], pa.float64()),
        "dec": pa.array([Decimal("123456789012.25")], pa.decimal128(14, 2)),
        "score": pa.array([3], pa.int64()),
    })  # fmt: skip
    (tmp_path / "h2").mkdir()
    (tmp_path / "h2" / "b.csv").write_text("id,label\n20,twenty\n")
    job_id = start(api, {"h1": "*.parquet", "h2": "*.csv"}, "evolve")
    run(api, job_id, tmp_path)
    completed(api, job_id)
    metadata = api.catalog.load_table("demo.events").metadata_location
    (got,) = _engine(
        engine, metadata,
        "SELECT id, n, f, CAST(dec AS VARCHAR) AS dec, score, label FROM t ORDER BY id",
    )  # fmt: skip
    assert got == [
        {"id": 0, "n": 7, "f": 1.5, "dec": "1.25", "score": None, "label": None},
        {"id": 10, "n": 2**40, "f": 0.25, "dec": "123456789012.25", "score": 3, "label": None},
        {"id": 20, "n": None, "f": None, "dec": None, "score": None, "label": "twenty"},
    ], engine
