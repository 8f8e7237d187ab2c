"""The Celery application: queues, routing, exactly-once settings and the beat schedule.

Queues: ``host-<id>`` (one per worker host, created on first use), ``ingest`` (tasks on shared
storage), ``control`` (commits, the watchdog and the auto-committer). Start a host with
``celery -A app.celery_app worker -Q host-1,control`` or ``floe worker``.

Nothing is built at import: the app is made from the settings on first use (``get_celery()``, or
the module attribute ``app`` that ``celery -A app.celery_app`` looks up). The coordinator only
publishes tasks by name; the worker side's task module is named in ``include`` (imported by Celery
in worker processes only), so ``app/`` never imports ``workers/``.
"""

from __future__ import annotations

import threading

from celery import Celery
from kombu import Queue

from app.settings import Settings, get_settings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
INGEST_TASK = "floe.ingest"
COMMIT_TASK = "floe.commit_job"
WATCHDOG_TASK = "floe.watchdog"
AUTOCOMMIT_TASK = "floe.autocommit"
PLAN_TASK = "floe.plan"
WORKER_TASKS_MODULE = "workers.tasks"


def make_celery(settings: Settings) -> Celery:
    celery = Celery("floe", broker=settings.redis_url or DEFAULT_REDIS_URL, include=[WORKER_TASKS_MODULE])
    interval = float(settings.watchdog_interval_seconds)
    celery.conf.update(
        # exactly-once rules: ack after the work, redeliver when a worker dies, take one at a time
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_seconds},
        broker_connection_retry_on_startup=True,
        task_queues=[Queue("ingest"), Queue("control")],
        task_default_queue="ingest",
        task_create_missing_queues=True,
        task_routes={
            COMMIT_TASK: {"queue": "control"},
            WATCHDOG_TASK: {"queue": "control"},
            AUTOCOMMIT_TASK: {"queue": "control"},
        },
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # events for Flower
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "floe-watchdog": {
                "task": WATCHDOG_TASK,
                "schedule": interval,
                "options": {"expires": interval * 2},
            },
            "floe-autocommit": {
                "task": AUTOCOMMIT_TASK,
                "schedule": interval,
                "options": {"expires": interval * 2},
            },
        },
    )
    return celery


_lock = threading.Lock()
_celery: Celery | None = None


def get_celery() -> Celery:
    """The process's Celery app, made from the settings on first use."""
    global _celery
    with _lock:
        if _celery is None:
            _celery = make_celery(get_settings())
        return _celery


def __getattr__(name: str) -> Celery:
    # ``celery -A app.celery_app`` looks for the attribute ``app``: made on first access, not at import
    if name == "app":
        return get_celery()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CeleryTaskQueue:
    """The service's TaskQueue, backed by this Celery app."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def send_ingest(self, job_id: str, task: object) -> str:
        return self.send_ingest_many(job_id, [task])[0]

    def send_ingest_many(self, job_id: str, tasks: list[object]) -> list[str]:
        """Publish one message per task through one producer (one connection checkout per job)."""
        from app.jobs.model import TaskSpec

        ids = []
        with self.celery.producer_or_acquire() as producer:
            for task in tasks:
                assert isinstance(task, TaskSpec)
                result = self.celery.send_task(
                    INGEST_TASK, args=[job_id, task.task_id], queue=task.queue, producer=producer
                )
                ids.append(str(result.id))
        return ids

    def send_commit(self, job_id: str) -> None:
        self.celery.send_task(COMMIT_TASK, args=[job_id], queue="control")

    def send_plan(self, job_id: str, host: str) -> str:
        """The host's planning task, on its own queue: only that host sees its files."""
        return str(self.celery.send_task(PLAN_TASK, args=[job_id, host], queue=f"host-{host}").id)

    def revoke(self, celery_ids: list[str]) -> None:
        if celery_ids:
            self.celery.control.revoke(celery_ids)
