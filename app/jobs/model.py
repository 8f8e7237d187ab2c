"""The job model: states and the view of a job that every edge reads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
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
class TaskSpec:
    task_id: str
    host: str = ""
    paths: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "paths": list(self.paths)})

    @classmethod
    def from_json(cls, task_id: str, text: str) -> TaskSpec:
        data = json.loads(text) if text else {}
        return cls(task_id, data.get("host", ""), tuple(data.get("paths", ())))

    @property
    def queue(self) -> str:
        return f"host-{self.host}" if self.host else "ingest"


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

    @property
    def expected(self) -> int:
        return self.expected_manifests or self.tasks_total

    @property
    def deadline(self) -> float:
        return self.last_progress_at + self.job_timeout_seconds

    @property
    def ready_to_commit(self) -> bool:
        return self.state in OPEN_STATES and self.expected > 0 and self.manifests_accepted >= self.expected

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Job:
        def _int(name: str) -> int:
            return int(data.get(name) or 0)

        committed = data.get("committed_snapshot_id")
        finished = data.get("finished_at")
        return cls(
            job_id=data["id"],
            state=JobState(data["state"]),
            table=TableRef.from_json(data["table"]),
            snapshot=DistributedSnapshot.from_json(data["snapshot"]),
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


@dataclass(frozen=True)
class NewJob:
    """What the store records for a job StartJob is creating (validated, snapshot reserved)."""

    table: TableRef
    snapshot: DistributedSnapshot
    requester: str
    timeout_seconds: int
    tasks: list[TaskSpec]
    expected: int
    auto_commit: bool
    snapshot_properties: dict[str, str]
    idempotency_key: str = ""
