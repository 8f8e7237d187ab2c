"""Celery tasks: each unpacks its ids and calls plain code (workers.task_runner, app.jobs.service).

Tasks are shared tasks, bound to the app Celery builds from the settings (``app.celery_app``), so
importing this module builds nothing. Task names are Floe's wire contract with queued messages.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import redis
from celery import Task, shared_task
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from app.celery_app import (
    AUTOCOMMIT_TASK,
    COMMIT_TASK,
    DEFAULT_REDIS_URL,
    INGEST_MANY_TASK,
    INGEST_TASK,
    PLAN_TASK,
    WATCHDOG_TASK,
)
from app.errors import CommitInProgress, FailedPrecondition, PermanentError, RetryableError
from app.logs import configure_logging, current_job_id
from app.runtime import get_service
from app.settings import get_settings
from workers.datafiles import use_jemalloc_unless_configured
from workers.heartbeat import Heartbeat
from workers.planning import host_processes, run_plan
from workers.task_events import BatchedTaskEvents, FloeRequest
from workers.task_runner import run_task, run_tasks

log = logging.getLogger("floe.tasks")


# Celery's own line per task received (main process) and per task succeeded (pool process): Floe logs
# each task once, with its job id, task id, outcome and rows; failures and rejections stay Celery's
# (WARNING and above), retries are Floe's (IngestTask.on_retry). FLOE_LOG_LEVEL=DEBUG keeps them all.
PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


@setup_logging.connect
def _configure_logging(**_kwargs: Any) -> None:
    # Floe's JSON logs instead of Celery's own format, in workers and beat alike.
    configure_logging()
    if logging.getLogger().getEffectiveLevel() >= logging.INFO:
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


_processes = 0  # this worker's pool size, set in the main process before the pool forks


@worker_init.connect
def _at_worker_start(sender: Any = None, **_kwargs: Any) -> None:
    """Choose the memory pool; report the host's concurrency (planning balances over it)."""
    global _processes
    settings = get_settings()
    use_jemalloc_unless_configured(settings.arrow_memory_pool)
    _processes = int(getattr(sender, "concurrency", 0) or 0)
    if sender is not None:
        sender.app.steps["consumer"].add(BatchedTaskEvents)  # workers/task_events.py
    if settings.worker_id:
        try:
            get_service().store.worker_heartbeat(settings.worker_id, concurrency=_processes)
        except Exception as exc:  # noqa: BLE001 - the heartbeat is advisory; tasks report problems
            log.warning("could not report this worker's concurrency: %s", exc)


_heartbeat: Heartbeat | None = None


@worker_ready.connect
def _start_heartbeat(**_kwargs: Any) -> None:
    """The host's heartbeat, from the main process once the pool is up (workers/heartbeat.py)."""
    global _heartbeat
    settings = get_settings()
    if settings.worker_id and _heartbeat is None:
        url = settings.redis_url or DEFAULT_REDIS_URL
        _heartbeat = Heartbeat.for_url(url, settings.worker_id, _processes).start()


@worker_shutdown.connect
def _stop_heartbeat(**_kwargs: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


@worker_process_init.connect
def _warm_up(**_kwargs: Any) -> None:
    """Connect to Redis and the catalog in each pool process before the first task arrives."""
    use_jemalloc_unless_configured(get_settings().arrow_memory_pool)
    try:
        from app.catalog import get_catalog

        get_service().store.ping()
        get_catalog(get_settings())
    except Exception as exc:  # noqa: BLE001 - the first task will report the problem properly
        log.warning("warm-up failed: %s", exc)


@task_prerun.connect
def _enter_job(task: Task | None = None, args: Any = None, **_kwargs: Any) -> None:
    if task is not None and task.name in (INGEST_TASK, INGEST_MANY_TASK, COMMIT_TASK, PLAN_TASK) and args:
        current_job_id.set(str(args[0]))


@task_postrun.connect
def _leave_job(**_kwargs: Any) -> None:
    current_job_id.set(None)


RETRYABLE = (RetryableError, OSError, redis.ConnectionError, redis.TimeoutError)


class RetriedTask(Task):  # type: ignore[misc]
    """Retryable errors retry with backoff; a permanent one, or running out of retries, ends the task
    and records why on the job (``failed``)."""

    Request = FloeRequest
    autoretry_for = RETRYABLE
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 5

    def on_failure(self, exc: BaseException, celery_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, PermanentError):
            reason = str(exc)
        else:
            reason = f"gave up after {self.request.retries} retries: {type(exc).__name__}: {exc}"
        self.failed(args[0], args[1], reason)  # Floe's ids; celery_id is Celery's message id

    def failed(self, job_id: str, subject: str, reason: str) -> None:
        raise NotImplementedError


class IngestTask(RetriedTask):
    def failed(self, job_id: str, task_id: str, reason: str) -> None:
        get_service().task_failed(job_id, task_id, reason, permanent=True)

    def on_retry(self, exc: BaseException, celery_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        log.warning(
            "task will retry (%s of %s): %s: %s", self.request.retries + 1, self.max_retries, type(exc).__name__, exc,
            extra={"job_id": args[0], "task_id": args[1]},
        )  # fmt: skip
        try:  # not running while it waits for its retry (its host shows it queued)
            get_service().store.task_stopped(args[0], args[1])
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # Redis is why it retries; the retry marks it running again


@shared_task(name=INGEST_TASK, base=IngestTask, bind=True)
def ingest(self: Task, job_id: str, task_id: str) -> str:
    return run_task(get_service(), job_id, task_id, get_settings())


class IngestManyTask(IngestTask):
    """A group of one host's ingest tasks: a failure or a retry is the task it happened in
    (``floe_task_id``, set by run_tasks), or the group's first when it happened outside them."""

    def on_failure(self, exc: BaseException, celery_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        super().on_failure(exc, celery_id, [args[0], _task_of(exc, args)], kwargs, einfo)

    def on_retry(self, exc: BaseException, celery_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        super().on_retry(exc, celery_id, [args[0], _task_of(exc, args)], kwargs, einfo)


def _task_of(exc: BaseException, args: Any) -> str:
    return str(getattr(exc, "floe_task_id", "") or (args[1][0] if args[1] else ""))


@shared_task(name=INGEST_MANY_TASK, base=IngestManyTask, bind=True)
def ingest_many(self: Task, job_id: str, task_ids: list[str]) -> str:
    queue = (self.request.delivery_info or {}).get("routing_key")

    def hand_back(rest: list[str]) -> bool:
        # The messages' Celery ids join the job's before they are published, so a cancel from now on
        # revokes them; a job no longer open takes none, and its tasks (which would skip) stay unsent.
        # Published before this message is acknowledged: a worker that dies in between leaves both,
        # and a task that then runs twice is recorded once (first writer wins; the loser's files go).
        celery_ids = [str(uuid.uuid4()) for _ in rest]
        if not get_service().store.add_celery_ids(job_id, celery_ids):
            return False
        for task_id, celery_id in zip(rest, celery_ids, strict=True):
            self.app.send_task(INGEST_TASK, args=[job_id, task_id], queue=queue, task_id=celery_id)
        return True

    # the group's own queue (its host's): without it, nothing is handed back (another host's worker
    # would not find the files)
    return run_tasks(get_service(), job_id, task_ids, get_settings(), hand_back if queue else None)


class PlanTask(RetriedTask):
    def failed(self, job_id: str, host: str, reason: str) -> None:
        get_service().fail_job(job_id, f"host {host} could not plan its sources: {reason}")


@shared_task(name=PLAN_TASK, base=PlanTask, bind=True)
def plan(self: Task, job_id: str, host: str) -> str:
    settings = get_settings()
    return run_plan(get_service(), job_id, host, settings, host_processes(settings, _processes))


@shared_task(name=COMMIT_TASK, bind=True, autoretry_for=RETRYABLE, retry_backoff=2, max_retries=10)
def commit_job(self: Task, job_id: str) -> str:
    try:
        job, already = get_service().commit(job_id)
    except (FailedPrecondition, CommitInProgress) as exc:
        # Not ready, already being committed, or finished: the auto-committer covers what remains.
        log.info("commit skipped: %s", exc, extra={"job_id": job_id})
        return f"skipped: {exc}"
    return f"{'already ' if already else ''}committed snapshot {job.committed_snapshot_id}"


@shared_task(name=WATCHDOG_TASK)
def watchdog() -> list[str]:
    return get_service().watchdog_tick()


@shared_task(name=AUTOCOMMIT_TASK)
def autocommit() -> list[str]:
    return get_service().autocommit_tick()
