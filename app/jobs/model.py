"""The job model: states and the view of a job that every edge reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import Any

from app.iceberg import DistributedSnapshot


class JobState(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMMITTING = "COMMITTING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


OPEN_STATES = (JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True)
class TableRef:
    catalog: str
    namespace: str
    table: str

    def to_json(self) -> str:
        return json.dumps({"catalog": self.catalog, "namespace": self.namespace, "table": self.table})

    @classmethod
    def from_json(cls, text: str) -> TableRef:
        data = json.loads(text)
        return cls(data["catalog"], data["namespace"], data["table"])

    def __str__(self) -> str:
        return f"{self.catalog + '.' if self.catalog else ''}{self.namespace}.{self.table}"


@dataclass(frozen=True)
class Piece:
    """Part of one source file a planned task reads: ``path`` relative to the host's WORKER_DATA_BASE;
    ``start``/``end`` are byte offsets (CSV, JSON lines) or row-group indices (Parquet), end exclusive;
    ``end == 0`` means the whole file."""

    path: str
    start: int = 0
    end: int = 0

    @property
    def whole(self) -> bool:
        return self.end == 0


@dataclass(frozen=True)
class TaskSpec:
    task_id: str
    host: str = ""
    paths: tuple[str, ...] = ()  # globs (tasks given by a client)
    pieces: tuple[Piece, ...] = ()  # files and parts of files (tasks a host planned)

    def to_json(self) -> str:
        data: dict[str, Any] = {"host": self.host, "paths": list(self.paths)}
        if self.pieces:
            data["pieces"] = [[p.path, p.start, p.end] for p in self.pieces]
        return json.dumps(data)

    @classmethod
    def from_json(cls, task_id: str, text: str) -> TaskSpec:
        data = json.loads(text) if text else {}
        pieces = tuple(Piece(str(p[0]), int(p[1]), int(p[2])) for p in data.get("pieces", ()))
        return cls(task_id, data.get("host", ""), tuple(data.get("paths", ())), pieces)

    @property
    def queue(self) -> str:
        return f"host-{self.host}" if self.host else "ingest"


@dataclass(frozen=True)
class HostSource:
    """Files on one host (globs relative to its WORKER_DATA_BASE) that the host plans into tasks."""

    host: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class HostPlan:
    """What a host's planner registered: how many tasks over how many files and bytes, and a note."""

    tasks: int
    files: int
    bytes: int
    note: str = ""

    def to_json(self) -> str:
        return json.dumps({"tasks": self.tasks, "files": self.files, "bytes": self.bytes, "note": self.note})

    @classmethod
    def from_json(cls, text: str) -> HostPlan:
        data = json.loads(text)
        return cls(int(data["tasks"]), int(data["files"]), int(data["bytes"]), str(data.get("note", "")))


@dataclass(frozen=True)
class HostProgress:
    """One host of a job: its plan (None while it plans or when it had no sources) and task counts."""

    host: str
    has_sources: bool
    plan: HostPlan | None
    tasks_total: int
    tasks_done: int
    tasks_failed: int
    tasks_running: int = 0  # started by a worker and not yet finished

    @property
    def tasks_queued(self) -> int:
        return max(0, self.tasks_total - self.tasks_done - self.tasks_failed - self.tasks_running)

    @property
    def planning(self) -> bool:
        return self.has_sources and self.plan is None


@dataclass(frozen=True)
class Job:
    job_id: str
    state: JobState
    table: TableRef
    snapshot: DistributedSnapshot
    requester: str
    job_timeout_seconds: int
    created_at: float
    last_progress_at: float
    finished_at: float | None
    expected_manifests: int  # as asked; 0 means one per registered task
    auto_commit: bool
    tasks_total: int
    tasks_done: int
    tasks_failed: int
    manifests_accepted: int
    rows_written: int
    bytes_written: int
    files_written: int
    committed_snapshot_id: int | None
    failure_reason: str
    snapshot_properties: dict[str, str] = field(default_factory=dict)
    enqueued: bool = False
    version: int = 0
    hosts_to_plan: int = 0  # hosts that have not registered their plan yet
    has_sources: bool = False  # hosts plan (some of) the job's tasks
    schema_mode: str = "strict"  # strict | evolve | ignore (app.iceberg.schema_evolution.SchemaMode)

    @property
    def planning(self) -> bool:
        return self.hosts_to_plan > 0

    @property
    def expected(self) -> int:
        return self.expected_manifests or self.tasks_total

    @property
    def deadline(self) -> float:
        return self.last_progress_at + self.job_timeout_seconds

    @property
    def ready_to_commit(self) -> bool:
        if self.state not in OPEN_STATES or self.planning:
            return False
        # a planned job whose hosts found nothing has nothing to wait for (it completes with no rows)
        return (self.expected > 0 or self.has_sources) and self.manifests_accepted >= self.expected

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Job:
        def _int(name: str) -> int:
            return int(data.get(name) or 0)

        committed = data.get("committed_snapshot_id")
        finished = data.get("finished_at")
        return cls(
            job_id=data["id"],
            state=JobState(data["state"]),
            table=_table(data["table"]),
            snapshot=_snapshot(data["snapshot"]),
            requester=data.get("requester", ""),
            job_timeout_seconds=_int("timeout"),
            created_at=float(data["created_at"]),
            last_progress_at=float(data["last_progress_at"]),
            finished_at=float(finished) if finished else None,
            expected_manifests=_int("expected"),
            auto_commit=data.get("auto_commit") == "1",
            tasks_total=_int("tasks_total"),
            tasks_done=_int("tasks_done"),
            tasks_failed=_int("tasks_failed"),
            manifests_accepted=_int("manifests"),
            rows_written=_int("rows"),
            bytes_written=_int("bytes"),
            files_written=_int("files"),
            committed_snapshot_id=int(committed) if committed else None,
            failure_reason=data.get("failure_reason", ""),
            snapshot_properties=json.loads(data.get("snapshot_properties") or "{}"),
            enqueued=data.get("enqueued") == "1",
            version=_int("version"),
            hosts_to_plan=_int("hosts_to_plan"),
            has_sources=data.get("has_sources") == "1",
            schema_mode=data.get("schema_mode") or "strict",
        )

    def summary(self) -> dict[str, Any]:
        """A log- and CLI-friendly view (no secrets live on a job)."""
        return {
            "job_id": self.job_id,
            "state": self.state.value,
            "table": str(self.table),
            "manifests": f"{self.manifests_accepted}/{self.expected}",
            "rows": self.rows_written,
            "committed_snapshot_id": self.committed_snapshot_id,
            "failure_reason": self.failure_reason,
        }


# A job's table and snapshot never change, and a worker reads its job's hash for every task: each is
# parsed once per process (both are frozen; nothing changes a snapshot's properties once reserved).
_table = lru_cache(maxsize=256)(TableRef.from_json)
_snapshot = lru_cache(maxsize=256)(DistributedSnapshot.from_json)


@dataclass(frozen=True)
class NewJob:
    """What the store records for a job StartJob is creating (validated, snapshot reserved)."""

    table: TableRef
    snapshot: DistributedSnapshot
    requester: str
    timeout_seconds: int
    tasks: Sequence[TaskSpec]  # a list, or the columns of app.jobs.task_batch.TaskBatch
    expected: int
    auto_commit: bool
    snapshot_properties: dict[str, str]
    idempotency_key: str = ""
    sources: list[HostSource] = field(default_factory=list)
    schema_mode: str = "strict"  # resolved at StartJob: the request's, else the table property's


@dataclass(frozen=True)
class HostInfo:
    """A worker host as its heartbeats describe it."""

    host: str
    last_heartbeat: float | None  # unix seconds; None when never seen
    concurrency: int  # worker processes (0 when unknown)

    def live(self, now: float, live_seconds: float) -> bool:
        return self.last_heartbeat is not None and now - self.last_heartbeat <= live_seconds
