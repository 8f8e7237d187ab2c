"""The job service: plain Python that every edge (gRPC, Celery tasks, beat, CLI) calls."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from pyiceberg.table import Table

from app.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from app.iceberg import ManifestDescriptor, begin_distributed_snapshot
from app.iceberg.files import delete_quietly
from app.iceberg.schema_evolution import resolve_schema_mode
from app.jobs import liveness, ticks
from app.jobs.cleanup import JobFiles, TableLoader
from app.jobs.committer import Committer
from app.jobs.dispatch import Dispatcher, MessageRenderer
from app.jobs.manifest_checks import check_reported_manifest, check_schema_change
from app.jobs.manifest_store import RecordResult
from app.jobs.model import OPEN_STATES, HostInfo, Job, JobState, NewJob, TableRef, TaskSpec
from app.jobs.store import JobStore
from app.jobs.validation import StartJobInput, check_job_id, check_table, check_tasks
from app.keys import DEFAULT_JOB_TIMEOUT_SECONDS

log = logging.getLogger("floe.jobs")
AfterAnswer = Callable[[Callable[[], None]], None]  # runs a callable once the caller has been answered


class TaskQueue(MessageRenderer, Protocol):
    """How the service reaches Celery (the core never imports it): task messages are rendered here
    and published by the dispatcher (app/jobs/dispatch.py)."""

    def send_commit(self, job_id: str) -> None: ...

    def revoke(self, celery_ids: list[str]) -> None: ...




@dataclass(frozen=True)
class Assignment:
    accepted: list[str]  # newly registered and enqueued
    already: list[str]  # known on this host: not run again
    recorded_manifests: dict[str, str]  # known task id -> its recorded manifest path (re-reported)
    state: str  # the job's state when the tasks were registered


class JobService:
    def __init__(self, store: JobStore, queue: TaskQueue, load_table: TableLoader) -> None:
        self.store = store
        self.queue = queue
        self.load_table = load_table
        self.files = JobFiles(store, load_table)
        self.committer = Committer(store, load_table, self.files, self._finish_badly)
        self.dispatcher = Dispatcher(store, queue)

    # --- starting -------------------------------------------------------------------------------

    def start_job(self, request: StartJobInput, after_answer: AfterAnswer | None = None) -> tuple[Job, bool]:
        """Validate, reserve the snapshot, record the job with its tasks; the dispatcher publishes the
        messages. ``after_answer`` (the gRPC edge) defers a background dispatcher's start until the answer
        has gone out (it would compete with the answer for the interpreter); without a background
        dispatcher the messages are published before the answer."""
        started = time.perf_counter()
        request = request.validated()
        assert request.table is not None
        if request.idempotency_key:
            existing = self.store.job_id_for_key(request.idempotency_key)
            if existing and (job := self.store.get(existing)) is not None:
                self.dispatcher.hand_over(job.job_id)  # a dispatcher that died: go on at once
                return self.store.require(job.job_id), False
        table = self.load_table(request.table)
        schema_mode = resolve_schema_mode(request.schema_mode, table.metadata.properties, str(request.table))
        snapshot = begin_distributed_snapshot(table, request.snapshot_properties)
        timeout = request.job_timeout_seconds or DEFAULT_JOB_TIMEOUT_SECONDS
        # Auto-commit by default only when the job knows how many manifests to expect; tasks that
        # arrive later through AssignTasks are committed with CommitJob (the README's walkthrough).
        auto_commit = request.auto_commit
        if auto_commit is None:
            auto_commit = bool(request.tasks or request.expected_manifest_count or request.sources)
        token = self.dispatcher.new_token()
        job_id, created = self.store.create(
            NewJob(
                table=request.table,
                snapshot=snapshot,
                requester=request.requester,
                timeout_seconds=timeout,
                tasks=request.tasks,
                expected=request.expected_manifest_count,
                auto_commit=auto_commit,
                snapshot_properties=request.snapshot_properties,
                idempotency_key=request.idempotency_key,
                sources=request.sources,
                schema_mode=schema_mode.value,
            ),
            dispatch_token=token,
        )
        # answered now; the messages are published by the dispatcher (in the coordinator, afterwards)
        hand_over = partial(self.dispatcher.hand_over, job_id, token if created else None)
        if after_answer is not None and self.dispatcher.background:
            after_answer(hand_over)
        else:
            hand_over()
        log.info(
            "job started",
            extra={
                "job_id": job_id, "table": str(request.table), "tasks": len(request.tasks),
                "source_hosts": len(request.sources), "seconds": round(time.perf_counter() - started, 4),
            },
        )  # fmt: skip
        return self.store.require(job_id), created

    def publish_plan(self, job_id: str, host: str) -> int:
        """Publish what ``host``'s registered plan appended to the job's dispatch list, unless published
        already (a redelivered planner publishes nothing twice). -> messages published by this call."""
        return self.dispatcher.dispatch(job_id)

    def commit_if_ready(self, job_id: str) -> None:
        """Commit now when the job auto-commits and is ready (e.g. the last host planned nothing)."""
        job = self.store.require(job_id)
        if job.auto_commit and job.ready_to_commit:
            self._commit_now(job_id)

    def hosts_of(self, job: Job, now: float | None = None) -> list[liveness.HostView]:
        return liveness.hosts_of(self.store, job, now)

    # --- reads ----------------------------------------------------------------------------------

    def status(self, job_id: str) -> Job:
        return self.store.require(check_job_id(job_id))

    def list_jobs(self, limit: int, states: set[JobState] | None = None) -> list[Job]:
        if limit < 0:
            raise InvalidArgument(f"limit={limit} must not be negative (0 = 100)")
        return self.store.list(min(limit or 100, 1000), states)

    # --- tasks and manifests --------------------------------------------------------------------

    def assign_tasks(
        self,
        job_id: str,
        worker_id: str,
        tasks: list[TaskSpec],
        snapshot_id: int,
        commit_uuid: str,
        table: TableRef | None,
    ) -> Assignment:
        """Register tasks on this worker's host and enqueue the new ones.

        Repeats are harmless in every state: tasks the job already has on this host are not run or
        enqueued again, and their recorded manifests are re-reported (acknowledged and ignored). New
        ids are refused, as a whole request, once the job takes no more tasks; a known id sent for
        another host is refused naming both hosts.
        """
        job = self.status(job_id)
        if not tasks:
            raise InvalidArgument("tasks is empty: give at least one {task_id}")
        check_tasks(tasks)
        if snapshot_id and snapshot_id != job.snapshot.snapshot_id:
            raise FailedPrecondition(
                f"snapshot.snapshot_id={snapshot_id} is not the snapshot reserved for job {job_id} "
                f"({job.snapshot.snapshot_id})"
            )
        if commit_uuid and commit_uuid != job.snapshot.commit_uuid:
            raise FailedPrecondition(
                f"snapshot.commit_uuid={commit_uuid!r} is not the commit uuid of job {job_id}"
            )
        if table is not None and (table.namespace, table.table) != (job.table.namespace, job.table.table):
            check_table(table)
            raise FailedPrecondition(f"table {table} is not the table of job {job_id} ({job.table})")
        specs = [TaskSpec(t.task_id, worker_id, t.paths) for t in tasks]
        reg = self.store.register_tasks(job_id, specs)
        if reg.outcome == "unknown":
            raise NotFound(f"job {job_id!r} does not exist")
        if reg.outcome == "conflict":
            pairs = ", ".join(
                f"task {tid!r} is registered on host {host!r}, not {worker_id!r}"
                for tid, host in zip(reg.ids[::2], reg.ids[1::2], strict=True)
            )
            raise AlreadyExists(f"job {job_id}: {pairs}; nothing was registered")
        if reg.outcome == "closed":
            raise FailedPrecondition(
                f"job {job_id} is {reg.state}: it takes no more tasks; new task ids refused: "
                f"{', '.join(reg.ids)} (nothing was registered)"
            )
        added = reg.ids
        if added:  # appended to the job's dispatch list by the registration
            self.dispatcher.dispatch(job_id)
        known = [s.task_id for s in specs if s.task_id not in added]
        recorded: dict[str, str] = {}
        for task_id in known:
            raw = self.store.manifest(job_id, task_id)
            if raw:  # re-reported: the store answers duplicate (or late) and changes nothing
                descriptor = ManifestDescriptor.from_json(raw)
                self.store.record_manifest(job_id, task_id, descriptor)
                recorded[task_id] = descriptor.manifest_path
        return Assignment(added, known, recorded, reg.state)

    def record_manifest(
        self,
        job_id: str,
        task_id: str,
        descriptor: ManifestDescriptor | None,
        table: Table | None = None,
        job: Job | None = None,
        written_here: bool = False,
    ) -> RecordResult:
        """First writer wins per (job, task); a loser's files are deleted; may trigger the commit.
        ``job``: the job as the caller read it already (its snapshot and table do not change);
        ``written_here``: this process wrote the manifest (write_task_manifest), so it is not read back."""
        job = job if job is not None and job.job_id == job_id else self.status(job_id)
        if descriptor is not None and (
            descriptor.snapshot_id != job.snapshot.snapshot_id
            or descriptor.commit_uuid != job.snapshot.commit_uuid
        ):
            raise InvalidArgument(
                f"manifest {descriptor.manifest_path} belongs to snapshot {descriptor.snapshot_id}, "
                f"not to job {job_id}'s snapshot {job.snapshot.snapshot_id}"
            )
        if descriptor is not None and descriptor.task_id != task_id:
            raise InvalidArgument(f"manifest describes task {descriptor.task_id!r}, not {task_id!r}")
        if descriptor is not None:
            table = table or self.load_table(job.table)
            if not written_here:
                check_reported_manifest(table, descriptor)
            if descriptor.schema_change:
                check_schema_change(descriptor, job.schema_mode, self.store.reserved_fields(job_id))
        result = self.store.record_manifest(job_id, task_id, descriptor)
        if not result.accepted and descriptor is not None:
            # A loser's files go, but only those this job's own attempts journaled (never another
            # job's, never what the report merely names) and never one the recorded winner references.
            recorded = self.store.manifest(job_id, task_id)
            winner = ManifestDescriptor.from_json(recorded) if recorded else None
            keep = {winner.manifest_path, *winner.data_files} if winner else set()
            journaled = self.store.journaled_files(job_id)
            loaded = table or self.load_table(job.table)
            own_manifest = [] if descriptor.inline is not None else [descriptor.manifest_path]  # inline: no file
            for path in (*descriptor.data_files, *own_manifest):
                if path in journaled and path not in keep:
                    delete_quietly(loaded.io, [path])
        if result.accepted:
            job = result.job or self.store.require(job_id)
            if job.auto_commit and job.ready_to_commit:
                self._commit_now(job_id)
        return result

    def _commit_now(self, job_id: str) -> None:
        """The last manifest is in: commit here and now (no queue hop). Whatever goes wrong is left to
        a queued commit task and to the beat auto-committer; it never fails the caller."""
        try:
            self.commit(job_id)
        except FailedPrecondition as exc:
            log.info("commit left to another committer: %s", exc, extra={"job_id": job_id})
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning(
                "commit after the last manifest failed (%s); queueing it", exc, extra={"job_id": job_id}
            )
            try:
                self.queue.send_commit(job_id)
            except Exception as send_exc:  # noqa: BLE001
                log.warning(
                    "could not queue the commit (%s); the auto-committer will",
                    send_exc,
                    extra={"job_id": job_id},
                )

    def task_failed(self, job_id: str, task_id: str, reason: str, permanent: bool) -> None:
        if not self.store.task_failed(job_id, task_id, reason):
            return
        if permanent:
            self.fail_job(job_id, f"task {task_id} failed: {reason}")

    def heartbeat(self, worker_id: str, job_id: str = "") -> bool:
        self.store.worker_heartbeat(worker_id)
        if not job_id:
            return False
        state = self.store.touch(check_job_id(job_id))
        if not state:
            raise NotFound(f"job {job_id!r} does not exist")
        return state in (JobState.PENDING.value, JobState.RUNNING.value, JobState.COMMITTING.value)

    def list_hosts(self, now: float | None = None) -> list[tuple[HostInfo, bool]]:
        return liveness.list_hosts(self.store, now)

    def open_tasks_on_host(self, host: str) -> int:
        return liveness.open_tasks_on_host(self.store, host)

    # --- committing (app/jobs/committer.py) -------------------------------------------------------

    def commit(self, job_id: str) -> tuple[Job, bool]:
        """Commit a ready job once. -> (job, already_committed)."""
        return self.committer.commit(self.status(job_id))

    # --- ending badly ---------------------------------------------------------------------------

    def cancel(self, job_id: str, reason: str = "") -> Job:
        job = self.status(job_id)
        if job.state == JobState.CANCELLED:
            return job
        if job.state.terminal or job.state == JobState.COMMITTING:
            raise FailedPrecondition(f"job {job_id} is {job.state.value}; it can no longer be cancelled")
        if not self._finish_badly(job_id, JobState.CANCELLED, reason or "cancelled by request"):
            job = self.store.require(job_id)
            if job.state != JobState.CANCELLED:
                raise FailedPrecondition(f"job {job_id} is {job.state.value}; it can no longer be cancelled")
        return self.store.require(job_id)

    def fail_job(self, job_id: str, reason: str) -> bool:
        return self._finish_badly(job_id, JobState.FAILED, reason)

    def _finish_badly(
        self,
        job_id: str,
        to: JobState,
        reason: str,
        allowed: Sequence[JobState] = OPEN_STATES,
    ) -> bool:
        ok, _ = self.store.transition(job_id, allowed, to, {"failure_reason": reason})
        if not ok:
            return False
        log.warning("job %s", to.value.lower(), extra={"job_id": job_id, "reason": reason})
        self.queue.revoke(self.store.celery_ids(job_id))
        self.files.after_failure(job_id)
        return True

    # --- beat: the watchdog and the auto-committer (app/jobs/ticks.py) -----------------------------

    def watchdog_tick(self, now: float | None = None) -> list[str]:
        return ticks.watchdog_tick(self, now)

    def autocommit_tick(self, now: float | None = None) -> list[str]:
        return ticks.autocommit_tick(self, now)
