"""The Redis job store: reads, and atomic transitions through the Lua scripts."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from app import keys
from app.errors import NotFound
from app.iceberg import DistributedSnapshot, ManifestDescriptor
from app.jobs import scripts
from app.jobs.model import OPEN_STATES, Job, JobState, TableRef, TaskSpec


@dataclass(frozen=True)
class RecordResult:
    status: str  # accepted | duplicate | late | unknown
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


def _csv(states: Iterable[JobState]) -> str:
    return ",".join(s.value for s in states)


class JobStore:
    def __init__(self, client: redis.Redis, retention_seconds: int) -> None:
        self.r = client
        self.retention_seconds = retention_seconds
        self._create = client.register_script(scripts.CREATE)
        self._register = client.register_script(scripts.REGISTER_TASKS)
        self._record = client.register_script(scripts.RECORD_MANIFEST)
        self._transition = client.register_script(scripts.TRANSITION)
        self._task_failed = client.register_script(scripts.TASK_FAILED)
        self._touch = client.register_script(scripts.TOUCH)
        self._release = client.register_script(scripts.RELEASE_LOCK)
        self._journal = client.register_script(scripts.JOURNAL_FILE)

    @classmethod
    def from_url(cls, url: str, retention_seconds: int) -> JobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True), retention_seconds)

    # --- creation -------------------------------------------------------------------------------

    def create(
        self,
        table: TableRef,
        snapshot: DistributedSnapshot,
        requester: str,
        timeout_seconds: int,
        tasks: list[TaskSpec],
        expected: int,
        auto_commit: bool,
        snapshot_properties: dict[str, str],
        idempotency_key: str = "",
        now: float | None = None,
    ) -> tuple[str, bool]:
        """Create a job; with an idempotency key, a retry returns the first job. -> (job_id, created)."""
        now = time.time() if now is None else now
        job_id = uuid.uuid4().hex
        fields = {
            "id": job_id,
            "state": JobState.PENDING.value,
            "table": table.to_json(),
            "snapshot": snapshot.to_json(),
            "requester": requester,
            "timeout": str(timeout_seconds),
            "created_at": repr(now),
            "last_progress_at": repr(now),
            "expected": str(expected),
            "auto_commit": "1" if auto_commit else "0",
            "snapshot_properties": json.dumps(snapshot_properties, sort_keys=True),
            "idempotency_key": idempotency_key,
            "enqueued": "0",
            "version": "1",
        }
        created, found = self._create(
            keys=[
                keys.job(job_id),
                keys.JOBS_BY_TIME,
                keys.ACTIVE_JOBS,
                keys.idempotency(idempotency_key) if idempotency_key else "",
                keys.job_tasks(job_id),
            ],
            args=[job_id, json.dumps(fields), repr(now), json.dumps({t.task_id: t.to_json() for t in tasks})],
        )
        if created and idempotency_key:
            self.r.expire(keys.idempotency(idempotency_key), self.retention_seconds)
        return str(found), bool(created)

    def mark_enqueued(self, job_id: str, celery_ids: list[str]) -> None:
        pipe = self.r.pipeline(transaction=True)
        if celery_ids:
            pipe.sadd(keys.job_celery_ids(job_id), *celery_ids)
        pipe.hset(keys.job(job_id), "enqueued", "1")
        pipe.execute()

    def register_tasks(
        self, job_id: str, tasks: list[TaskSpec], now: float | None = None
    ) -> tuple[str, list[str]]:
        """Add tasks (first registration wins). -> (job state, ids newly registered)."""
        args: list[Any] = [repr(time.time() if now is None else now)]
        for t in tasks:
            args += [t.task_id, t.to_json()]
        out = self._register(keys=[keys.job(job_id), keys.job_tasks(job_id)], args=args)
        return str(out[0]), [str(x) for x in out[1:]]

    # --- reads ----------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        data = self.r.hgetall(keys.job(job_id))
        return Job.from_hash(data) if data else None  # type: ignore[arg-type]

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise NotFound(
                f"job {job_id!r} does not exist (or finished longer ago than the retention period)"
            )
        return job

    def task_context(self, job_id: str, task_id: str) -> tuple[Job | None, str | None, TaskSpec | None]:
        """The job, the task's recorded manifest and the task's spec, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.job(job_id))
        pipe.hget(keys.job_manifests(job_id), task_id)
        pipe.hget(keys.job_tasks(job_id), task_id)
        data, manifest, raw = pipe.execute()
        job = Job.from_hash(data) if data else None
        spec = TaskSpec.from_json(task_id, raw) if raw is not None else None
        return job, manifest, spec

    def task(self, job_id: str, task_id: str) -> TaskSpec | None:
        raw = self.r.hget(keys.job_tasks(job_id), task_id)
        return TaskSpec.from_json(task_id, raw) if raw is not None else None  # type: ignore[arg-type]

    def tasks(self, job_id: str) -> list[TaskSpec]:
        data: dict[str, str] = self.r.hgetall(keys.job_tasks(job_id))  # type: ignore[assignment]
        return [TaskSpec.from_json(k, v) for k, v in sorted(data.items())]

    def manifest(self, job_id: str, task_id: str) -> str | None:
        return self.r.hget(keys.job_manifests(job_id), task_id)  # type: ignore[return-value]

    def manifests(self, job_id: str) -> list[ManifestDescriptor]:
        data: dict[str, str] = self.r.hgetall(keys.job_manifests(job_id))  # type: ignore[assignment]
        return [ManifestDescriptor.from_json(v) for _, v in sorted(data.items()) if v]

    def cleanup_pending(self, job_id: str, now: float | None = None) -> None:
        self.r.zadd(keys.CLEANUP_PENDING, {job_id: time.time() if now is None else now})

    def cleanup_done(self, job_id: str) -> None:
        self.r.zrem(keys.CLEANUP_PENDING, job_id)

    def cleanups_pending_since(self, before: float) -> list[str]:
        """Job ids whose cleanup was recorded before ``before`` and is not done."""
        return list(self.r.zrangebyscore(keys.CLEANUP_PENDING, "-inf", before))  # type: ignore[arg-type]

    def journal_file(self, job_id: str, path: str) -> None:
        self._journal(keys=[keys.job(job_id), keys.job_files(job_id)], args=[path, self.retention_seconds])

    def journaled_files(self, job_id: str) -> set[str]:
        return set(self.r.smembers(keys.job_files(job_id)))  # type: ignore[arg-type]

    def failures(self, job_id: str) -> dict[str, str]:
        return self.r.hgetall(keys.job_failures(job_id))  # type: ignore[return-value]

    def celery_ids(self, job_id: str) -> list[str]:
        return sorted(self.r.smembers(keys.job_celery_ids(job_id)))  # type: ignore[arg-type]

    def active_ids(self) -> list[str]:
        return sorted(self.r.smembers(keys.ACTIVE_JOBS))  # type: ignore[arg-type]

    def list(self, limit: int, states: set[JobState] | None = None) -> list[Job]:
        out: list[Job] = []
        expired: list[str] = []
        start = 0
        while len(out) < limit:
            ids = self.r.zrevrange(keys.JOBS_BY_TIME, start, start + 99)
            if not ids:
                break
            start += 100
            for job_id in ids:  # type: ignore[union-attr]
                job = self.get(job_id)
                if job is None:
                    expired.append(job_id)
                    continue
                if states and job.state not in states:
                    continue
                out.append(job)
                if len(out) >= limit:
                    break
        if expired:  # removed after paging, so the pages read above did not shift under us
            self.r.zrem(keys.JOBS_BY_TIME, *expired)
        return out

    def committed_snapshot(self, job_id: str) -> int | None:
        raw = self.r.get(keys.committed(job_id))
        return int(raw) if raw else None  # type: ignore[arg-type]

    # --- transitions ----------------------------------------------------------------------------

    def record_manifest(
        self, job_id: str, task_id: str, descriptor: ManifestDescriptor | None, now: float | None = None
    ) -> RecordResult:
        payload = descriptor.to_json() if descriptor is not None else ""
        rows = descriptor.added_rows_count if descriptor else 0
        size = descriptor.added_bytes if descriptor else 0
        files = descriptor.added_files_count if descriptor else 0
        status, detail = self._record(
            keys=[keys.job(job_id), keys.job_manifests(job_id), keys.job_tasks(job_id), keys.METRICS],
            args=[task_id, payload, rows, size, files, repr(time.time() if now is None else now)],
        )
        return RecordResult(str(status), str(detail))

    def transition(
        self,
        job_id: str,
        allowed: Iterable[JobState],
        to: JobState,
        fields: dict[str, str] | None = None,
        now: float | None = None,
    ) -> tuple[bool, str]:
        ok, state = self._transition(
            keys=[keys.job(job_id), keys.ACTIVE_JOBS, keys.METRICS, *keys.job_keys(job_id)],
            args=[
                _csv(allowed),
                to.value,
                json.dumps(fields or {}),
                repr(time.time() if now is None else now),
                self.retention_seconds,
            ],
        )
        return bool(ok), str(state)

    def complete(self, job_id: str, snapshot_id: int | None) -> bool:
        if snapshot_id is not None:
            self.r.set(
                keys.committed(job_id),
                str(snapshot_id),
                ex=self.retention_seconds * keys.COMMITTED_TTL_FACTOR,
            )
        ok, _ = self.transition(
            job_id,
            [JobState.COMMITTING],
            JobState.COMPLETED,
            {"committed_snapshot_id": str(snapshot_id) if snapshot_id is not None else ""},
        )
        return ok

    def fail(self, job_id: str, reason: str, allowed: Iterable[JobState] = OPEN_STATES) -> bool:
        ok, _ = self.transition(job_id, allowed, JobState.FAILED, {"failure_reason": reason})
        return ok

    def task_failed(self, job_id: str, task_id: str, reason: str, now: float | None = None) -> bool:
        out = self._task_failed(
            keys=[keys.job(job_id), keys.job_failures(job_id), keys.METRICS],
            args=[task_id, reason, repr(time.time() if now is None else now)],
        )
        return bool(out)

    def touch(self, job_id: str, now: float | None = None) -> str:
        return str(self._touch(keys=[keys.job(job_id)], args=[repr(time.time() if now is None else now)]))

    def worker_heartbeat(self, worker_id: str, now: float | None = None) -> None:
        self.r.hset(keys.WORKERS, worker_id, repr(time.time() if now is None else now))

    def count(self, name: str, amount: float = 1) -> None:
        """Add to a cluster-wide counter (exported by the coordinator's /metrics)."""
        self.r.hincrbyfloat(keys.METRICS, name, amount)

    def counters(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.r.hgetall(keys.METRICS).items()}  # type: ignore[union-attr]

    # --- the commit lock ------------------------------------------------------------------------

    def acquire_commit_lock(self, job_id: str, ttl_ms: int = keys.COMMIT_LOCK_TTL_MS) -> str | None:
        token = uuid.uuid4().hex
        return token if self.r.set(keys.commit_lock(job_id), token, nx=True, px=ttl_ms) else None

    def release_commit_lock(self, job_id: str, token: str) -> None:
        self._release(keys=[keys.commit_lock(job_id)], args=[token])

    def commit_locked(self, job_id: str) -> bool:
        return bool(self.r.exists(keys.commit_lock(job_id)))
