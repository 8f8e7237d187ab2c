"""The table, sources and job helpers of the schema-drift tests (tests/test_schema_drift.py,
tests/test_schema_modes.py): jobs through the real gRPC API whose tasks run as the Celery task runs them."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import (
    DecimalType,
    FloatType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    StructType,
)

from app.errors import SourceError
from app.proto_gen.api import common_pb2, coordinator_pb2
from app.settings import Settings
from tests.support.api_server import Api, start_request
from workers.task_runner import run_task

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
