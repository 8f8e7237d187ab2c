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

import os
import threading
import time
from typing import Any

from celery import Celery
from kombu import Producer, Queue
from kombu.utils import json as kombu_json

from app.jobs.dispatch import message_groups
from app.jobs.dispatch_store import Message, Outgoing
from app.settings import Settings, get_settings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
INGEST_TASK = "floe.ingest"
INGEST_MANY_TASK = "floe.ingest_many"  # a group of one host's ingest tasks (app.jobs.dispatch.message_groups)
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
        worker_disable_rate_limits=True,  # Floe sets none: skip the per-task rate-limit check
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
        # events for Flower: every task shows with its arguments (job id, task id) from the worker's
        # task-received event, then task-succeeded / -failed. No task-sent event (a dispatched message
        # is published by a Lua script, not by a Celery producer) and no task-started event (see
        # workers/task_events.py, which also batches them): each event costs the worker, Redis and Flower.
        worker_send_task_events=True,
        task_send_sent_event=False,
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
        self._render_lock = threading.Lock()
        self._capture: tuple[int, Any, list[tuple[str, str]]] | None = None

    def render(self, job_id: str, entries: list[Outgoing]) -> list[Message]:
        """The entries as the messages Celery would publish, grouped by :func:`message_groups`: an ingest
        task (args: job id, task id) or a group of them (args: job id, [task ids]) on its host's queue,
        or a host's planning task (args: job id, host). Nothing is sent here: the dispatcher LPUSHes the
        messages together with its cursor (app/jobs/dispatch.py)."""
        out = []
        with self._render_lock:
            producer, captured = self._capturing_producer()
            for i, group in enumerate(message_groups(entries)):
                entry = group[0]
                arg: str | list[str]
                if len(group) > 1:
                    name, arg = INGEST_MANY_TASK, [e.task_id for e in group]
                else:
                    name, arg = (INGEST_TASK, entry.task_id) if entry.task_id else (PLAN_TASK, entry.host)
                result = self.celery.send_task(
                    name,
                    args=[job_id, arg],
                    queue=entry.queue,
                    producer=producer,
                    declare=[],  # nothing is sent through kombu here: no queue to declare per message
                    argsrepr=f"[{job_id!r}, {arg!r}]",  # what Celery's saferepr makes of the ids, cheaply
                    kwargsrepr="{}",
                )
                key, payload = captured.pop()
                out.append(Message(key, payload, str(result.id)))
                if i % 32 == 31:
                    time.sleep(0)  # let request threads have the interpreter: rendering is background work
        return out

    def _capturing_producer(self) -> tuple[Any, list[tuple[str, str]]]:
        """A producer on a kombu channel of this process's own whose deliveries are kept, not sent: the
        transport's ``_put`` (LPUSH of the message onto its queue's list) records (list key, payload)."""
        pid = os.getpid()
        if self._capture is None or self._capture[0] != pid:
            channel = self.celery.connection_for_write().default_channel
            captured: list[tuple[str, str]] = []
            prefix = getattr(channel, "global_keyprefix", "") or ""

            def put(queue: str, message: dict[str, Any], **_options: Any) -> None:
                priority = channel._get_message_priority(message, reverse=False)
                captured.append((prefix + channel._q_for_pri(queue, priority), kombu_json.dumps(message)))

            channel._put = put
            self._capture = (pid, Producer(channel), captured)
        return self._capture[1], self._capture[2]

    def send_commit(self, job_id: str) -> None:
        self.celery.send_task(COMMIT_TASK, args=[job_id], queue="control")

    def revoke(self, celery_ids: list[str]) -> None:
        if celery_ids:
            self.celery.control.revoke(celery_ids)
