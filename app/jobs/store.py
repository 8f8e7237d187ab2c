"""The Redis job store: reads, and atomic transitions through the Lua scripts.

The only holder of a Redis client in Floe: the service, the servicers, metrics and the Celery tasks
reach Redis through the methods here, each named for what it does.
"""

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
from app.jobs import scripts
from app.jobs.dispatch_store import DispatchStore
from app.jobs.field_store import FieldStore
from app.jobs.host_store import HostStore
from app.jobs.manifest_store import ManifestStore
from app.jobs.model import Job, JobState, NewJob, TaskSpec
from app.jobs.running_store import RunningStore
from app.jobs.task_batch import TaskBatch


@dataclass(frozen=True)
class Registration:
    state: str  # the job's state ("" when the job does not exist)
    outcome: str  # ok | conflict | closed | unknown
    # ok: the ids newly registered; conflict: pairs (id, the host it is registered on);
    # closed: the new ids the job refused
    ids: list[str]


# the state :meth:`JobStore.transition` reports when the caller's commit lease has run out
LEASE_LOST = "LEASE_LOST"


def _csv(states: Iterable[JobState]) -> str:
    return ",".join(s.value for s in states)


class JobStore(ManifestStore, HostStore, FieldStore, DispatchStore, RunningStore):
    def __init__(self, client: redis.Redis, retention_seconds: int) -> None:
        self._r = client
        self.retention_seconds = retention_seconds
        self._create = client.register_script(scripts.CREATE)
        self._register = client.register_script(scripts.REGISTER_TASKS)
        self._record = client.register_script(scripts.RECORD_MANIFEST)
        self._headers_stored: set[tuple[str, str]] = set()
        self._transition = client.register_script(scripts.TRANSITION)
        self._task_failed = client.register_script(scripts.TASK_FAILED)
        self._touch = client.register_script(scripts.TOUCH)
        self._release = client.register_script(scripts.RELEASE_LOCK)
        self._renew = client.register_script(scripts.RENEW_LOCK)
        self._journal = client.register_script(scripts.JOURNAL_FILE)
        self._register_plan = client.register_script(scripts.REGISTER_PLAN)
        self._reserve_fields = client.register_script(scripts.RESERVE_FIELDS)

    @classmethod
    def from_url(cls, url: str, retention_seconds: int, **options: Any) -> JobStore:
        """A store on ``url`` (``options``: redis-py connection options such as socket timeouts)."""
        return cls(redis.Redis.from_url(url, decode_responses=True, **options), retention_seconds)

    # --- creation -------------------------------------------------------------------------------

    def create(self, new: NewJob, now: float | None = None, dispatch_token: str = "") -> tuple[str, bool]:
        """Create a job; with an idempotency key, a retry returns the first job. -> (job_id, created).

        The job, its tasks and its dispatch list are recorded at once; a created job with anything to
        publish is handed to ``dispatch_token``'s dispatcher (its dispatch lease)."""
        now = time.time() if now is None else now
        job_id = uuid.uuid4().hex
        tasks = TaskBatch.of(new.tasks)
        fields = {
            "id": job_id,
            "state": JobState.PENDING.value,
            "table": new.table.to_json(),
            "snapshot": new.snapshot.to_json(),
            "requester": new.requester,
            "timeout": str(new.timeout_seconds),
            "created_at": repr(now),
            "last_progress_at": repr(now),
            "expected": str(new.expected),
            "auto_commit": "1" if new.auto_commit else "0",
            "snapshot_properties": json.dumps(new.snapshot_properties, sort_keys=True),
            "idempotency_key": new.idempotency_key,
            "enqueued": "0",
            "version": "1",
            "schema_mode": new.schema_mode,
        }
        created, found = self._create(
            keys=[
                keys.job(job_id),
                keys.JOBS_BY_TIME,
                keys.ACTIVE_JOBS,
                keys.idempotency(new.idempotency_key) if new.idempotency_key else "",
                keys.job_tasks(job_id),
                keys.job_hosts(job_id),
                keys.job_sources(job_id),
                keys.job_dispatch(job_id),
                keys.dispatch_lock(job_id),
                keys.DISPATCH_PENDING,
            ],
            args=[
                job_id, json.dumps(fields), repr(now), "", len(tasks), json.dumps(tasks.host_counts()),
                json.dumps([[src.host, json.dumps(list(src.paths))] for src in new.sources]),
                dispatch_token, keys.DISPATCH_LEASE_MS, *tasks.dispatch_chunks(keys.DISPATCH_BATCH),
            ],
        )  # fmt: skip
        if created and new.idempotency_key:
            self._r.expire(keys.idempotency(new.idempotency_key), self.retention_seconds)
        return str(found), bool(created)

    def register_tasks(self, job_id: str, tasks: list[TaskSpec], now: float | None = None) -> Registration:
        """Register tasks, all or none (first registration of an id wins). See :class:`Registration`."""
        args: list[Any] = [repr(time.time() if now is None else now)]
        for t in tasks:
            args += [t.task_id, t.host, t.to_json()]
        out = [
            str(x)
            for x in self._register(
                keys=[
                    keys.job(job_id), keys.job_tasks(job_id), keys.job_hosts(job_id), keys.job_dispatch(job_id),
                    keys.DISPATCH_PENDING,
                ],
                args=args,
            )  # fmt: skip
        ]
        if not out[0]:
            return Registration("", "unknown", [])
        return Registration(out[0], out[1], out[2:])

    # --- reads ----------------------------------------------------------------------------------

    def close(self) -> None:
        self._r.close()

    def ping(self) -> bool:
        return bool(self._r.ping())

    def job_id_for_key(self, idempotency_key: str) -> str | None:
        """The job a StartJob with this idempotency key created, if any."""
        found = self._r.get(keys.idempotency(idempotency_key))
        return str(found) if found else None

    def finished_task_ids(self, job_id: str) -> set[str]:
        """Tasks that recorded a manifest or a failure."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hkeys(keys.job_manifests(job_id))
        pipe.hkeys(keys.job_failures(job_id))
        done, failed = pipe.execute()
        return set(done) | set(failed)

    def open_job_counts(self) -> dict[str, int]:
        """Jobs not yet finished, by state (PENDING, RUNNING, COMMITTING)."""
        counts = {JobState.PENDING.value: 0, JobState.RUNNING.value: 0, JobState.COMMITTING.value: 0}
        ids = self.active_ids()
        if not ids:
            return counts
        pipe = self._r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "state")
        for state in pipe.execute():
            if isinstance(state, str) and state in counts:
                counts[state] += 1
        return counts

    def subscribe_job_events(self) -> redis.client.PubSub:
        """A subscription-ready pub/sub connection for :mod:`app.jobs.events` (job ids on JOB_EVENTS)."""
        return self._r.pubsub(ignore_subscribe_messages=True)

    def get(self, job_id: str) -> Job | None:
        data = self._r.hgetall(keys.job(job_id))
        return Job.from_hash(data) if data else None  # type: ignore[arg-type]

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise NotFound(
                f"job {job_id!r} does not exist (or finished longer ago than the retention period)"
            )
        return job

    def tasks(self, job_id: str) -> list[TaskSpec]:
        self.materialize_specs(job_id)
        data: dict[str, str] = self._r.hgetall(keys.job_tasks(job_id))  # type: ignore[assignment]
        return [TaskSpec.from_json(k, v) for k, v in sorted(data.items())]

    def cleanup_pending(self, job_id: str, now: float | None = None) -> None:
        self._r.zadd(keys.CLEANUP_PENDING, {job_id: time.time() if now is None else now})

    def cleanup_done(self, job_id: str) -> None:
        self._r.zrem(keys.CLEANUP_PENDING, job_id)

    def cleanups_pending_since(self, before: float) -> list[str]:
        """Job ids whose cleanup was recorded before ``before`` and is not done."""
        return list(self._r.zrangebyscore(keys.CLEANUP_PENDING, "-inf", before))  # type: ignore[arg-type]

    def journal_file(self, job_id: str, *paths: str) -> None:
        """Record ``paths`` as files of the job (before they exist): one round trip for all of them."""
        if paths:
            self._journal(keys=[keys.job(job_id), keys.job_files(job_id)], args=[self.retention_seconds, *paths])

    def journaled_files(self, job_id: str) -> set[str]:
        return set(self._r.smembers(keys.job_files(job_id)))  # type: ignore[arg-type]

    def failures(self, job_id: str) -> dict[str, str]:
        return self._r.hgetall(keys.job_failures(job_id))  # type: ignore[return-value]

    def celery_ids(self, job_id: str) -> list[str]:
        return sorted(self._r.smembers(keys.job_celery_ids(job_id)))  # type: ignore[arg-type]

    def active_ids(self) -> list[str]:
        return sorted(self._r.smembers(keys.ACTIVE_JOBS))  # type: ignore[arg-type]

    def list(self, limit: int, states: set[JobState] | None = None) -> list[Job]:
        out: list[Job] = []
        expired: list[str] = []
        start = 0
        while len(out) < limit:
            ids = self._r.zrevrange(keys.JOBS_BY_TIME, start, start + 99)
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
            self._r.zrem(keys.JOBS_BY_TIME, *expired)
        return out

    def committed_snapshot(self, job_id: str) -> int | None:
        raw = self._r.get(keys.committed(job_id))
        return int(raw) if raw else None  # type: ignore[arg-type]

    # --- transitions ----------------------------------------------------------------------------

    def transition(
        self,
        job_id: str,
        allowed: Iterable[JobState],
        to: JobState,
        fields: dict[str, str] | None = None,
        now: float | None = None,
        lease: str | None = None,
    ) -> tuple[bool, str]:
        """-> (whether it happened, the state now). With ``lease`` (a commit lock token), only while
        that lease is still held: else (False, :data:`LEASE_LOST`)."""
        ok, state = self._transition(
            keys=[
                keys.job(job_id),
                keys.ACTIVE_JOBS,
                keys.METRICS,
                keys.commit_lock(job_id),
                *keys.job_keys(job_id),
            ],
            args=[
                _csv(allowed),
                to.value,
                json.dumps(fields or {}),
                repr(time.time() if now is None else now),
                self.retention_seconds,
                lease or "",
            ],
        )
        return bool(ok), str(state)

    def complete(self, job_id: str, snapshot_id: int | None, lease: str | None = None) -> bool:
        """COMMITTING -> COMPLETED (with ``lease``: only while that commit lease is held)."""
        if snapshot_id is not None:
            self._r.set(
                keys.committed(job_id),
                str(snapshot_id),
                ex=self.retention_seconds * keys.COMMITTED_TTL_FACTOR,
            )
        ok, _ = self.transition(
            job_id,
            [JobState.COMMITTING],
            JobState.COMPLETED,
            {"committed_snapshot_id": str(snapshot_id) if snapshot_id is not None else ""},
            lease=lease,
        )
        return ok

    def task_failed(self, job_id: str, task_id: str, reason: str, now: float | None = None) -> bool:
        out = self._task_failed(
            keys=[
                keys.job(job_id), keys.job_failures(job_id), keys.METRICS, keys.job_tasks(job_id),
                keys.job_hosts(job_id), keys.job_running(job_id), keys.job_dispatch(job_id),
            ],  # fmt: skip
            args=[task_id, reason, repr(time.time() if now is None else now)],
        )
        return bool(out)

    def touch(self, job_id: str, now: float | None = None) -> str:
        return str(self._touch(keys=[keys.job(job_id)], args=[repr(time.time() if now is None else now)]))

    def count(self, name: str, amount: float = 1) -> None:
        """Add to a cluster-wide counter (exported by the coordinator's /metrics)."""
        self._r.hincrbyfloat(keys.METRICS, name, amount)

    def observe_commit_seconds(self, seconds: float) -> None:
        """One commit's duration into the cluster-wide histogram (buckets: keys.COMMIT_BUCKETS)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hincrbyfloat(keys.METRICS, "commit_seconds_sum", seconds)
        pipe.hincrby(keys.METRICS, "commit_seconds_count", 1)
        for bound in keys.COMMIT_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(keys.METRICS, f"commit_seconds_le_{bound}", 1)
        pipe.execute()

    def counters(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._r.hgetall(keys.METRICS).items()}  # type: ignore[union-attr]

    # --- the commit lock ------------------------------------------------------------------------

    def acquire_commit_lock(self, job_id: str, ttl_ms: int = keys.COMMIT_LEASE_MS) -> str | None:
        """Take the job's commit lease for ``ttl_ms``: its token, or None while another holds it."""
        token = uuid.uuid4().hex
        return token if self._r.set(keys.commit_lock(job_id), token, nx=True, px=ttl_ms) else None

    def renew_commit_lock(self, job_id: str, token: str, ttl_ms: int = keys.COMMIT_LEASE_MS) -> bool:
        """Extend the lease by ``ttl_ms`` from now if ``token`` still holds it; False once it was lost."""
        return bool(self._renew(keys=[keys.commit_lock(job_id)], args=[token, ttl_ms]))

    def release_commit_lock(self, job_id: str, token: str) -> None:
        self._release(keys=[keys.commit_lock(job_id)], args=[token])

    def commit_locked(self, job_id: str) -> bool:
        return bool(self._r.exists(keys.commit_lock(job_id)))
