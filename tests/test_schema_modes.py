"""Schema modes strict (the default), ignore and the table property; evolve exactly once across a redelivered
task and a concurrent writer's schema change; old and new files through outside readers (issue 17).
The jobs run as in tests/test_schema_drift.py (tests/support/drift.py)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
from pyiceberg.types import (
    LongType,
    StringType,
)

from app.errors import InvalidArgument
from app.iceberg.schema_evolution import RESERVED_ID_GAP, LocalFieldIds, SchemaMode
from app.proto_gen.api import common_pb2, coordinator_pb2
from tests.support.api_server import Api, call_fails, start_request
from tests.support.drift import (
    INVALID,
    WIDE,
    completed,
    files_under,
    make_wide,
    parquet,
    run,
    start,
    status,
    table_rows,
)
from tests.test_outside_checks import _engine, _engine_available
from workers.conversion import write_task_manifest

pytestmark = pytest.mark.integration


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
    files = [*manifest.data_files, *([manifest.manifest_path] if manifest.inline is None else [])]
    job_files = {Path(p.removeprefix("file://")) for p in files}
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
