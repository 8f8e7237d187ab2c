"""Job-store builders shared by the store, events and API tests: a reserved snapshot, a manifest
description, a job created straight through the store, and a failure recorded the same way; and the
fixtures ``r`` (a client of the test's redis-server, emptied) and ``store`` (a JobStore on it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator

import pytest
import redis

from app.iceberg import DistributedSnapshot, ManifestDescriptor
from app.jobs.model import OPEN_STATES, JobState, NewJob, TableRef, TaskSpec
from app.jobs.store import JobStore

TABLE = TableRef("", "demo", "events")


def snapshot(snapshot_id: int = 42) -> DistributedSnapshot:
    return DistributedSnapshot(
        snapshot_id=snapshot_id,
        commit_uuid=str(uuid.uuid4()),
        parent_snapshot_id=None,
        table_uuid=str(uuid.uuid4()),
        table_identifier=("demo", "events"),
        metadata_location="file:///w/demo/events/metadata/00000.metadata.json",
        format_version=2,
        schema_id=0,
        spec_id=0,
    )


def descriptor(task_id: str, rows: int = 10, size: int = 1000, files: int = 1) -> ManifestDescriptor:
    return ManifestDescriptor(
        task_id=task_id,
        snapshot_id=42,
        commit_uuid=str(uuid.uuid4()),
        manifest_path=f"file:///w/metadata/{task_id}-m0.avro",
        manifest_length=4096,
        partition_spec_id=0,
        added_files_count=files,
        added_rows_count=rows,
        added_bytes=size,
        partitions=[],
        data_files=[f"file:///w/data/{task_id}-{i}.parquet" for i in range(files)],
    )


def create(
    store: JobStore,
    tasks: list[TaskSpec] | None = None,
    key: str = "",
    expected: int = 0,
    now: float | None = None,
) -> tuple[str, bool]:
    new = NewJob(
        table=TABLE,
        snapshot=snapshot(),
        requester="tester",
        timeout_seconds=600,
        tasks=tasks if tasks is not None else [TaskSpec("t1", "h1", ("*.csv",)), TaskSpec("t2", "h2")],
        expected=expected,
        auto_commit=True,
        snapshot_properties={"k": "v"},
        idempotency_key=key,
    )
    return store.create(new, now=now)


def fail(store: JobStore, job_id: str, reason: str, allowed: Iterable[JobState] = OPEN_STATES) -> bool:
    """What the service's fail_job records, straight through the store."""
    return store.transition(job_id, allowed, JobState.FAILED, {"failure_reason": reason})[0]


def task_spec(store: JobStore, job_id: str, task_id: str) -> TaskSpec | None:
    return store.task_context(job_id, task_id)[2]


# --- fixtures (a plugin of tests/conftest.py): a store on the test's redis-server, emptied first ----------

RETENTION = 3600


@pytest.fixture
def r(redis_server: object) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)  # type: ignore[attr-defined]
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def store(r: redis.Redis) -> JobStore:
    return JobStore(r, RETENTION)
