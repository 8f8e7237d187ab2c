"""Task events for Flower, at a fraction of their price.

Flower shows every task from the worker's events: ``task-received`` (with the task's arguments, so the
job id and task id), then ``task-succeeded`` / ``-failed`` / ``-retried``. Celery publishes each event
as its own Redis PUBLISH from the worker's main process as soon as the event loop comes round, and
Flower decodes each as its own message. Two changes:

- :class:`FloeRequest` sends no ``task-started`` (its pid and timing are in the received and succeeded
  events; the ``STARTED`` state only matters with a result backend, which Floe does not use);
- :class:`BatchedTaskEvents` (a consumer bootstep) lets the worker's buffered task events leave together:
  Celery already sends its buffer as one ``task.multi`` message, but flushes it on every turn of the
  event loop; flushed every :data:`FLUSH_SECONDS` (or at Celery's buffer limit, 24 events), a busy host
  sends a few messages a second instead of two per task. Flower shows tasks at most that much later.
"""

from __future__ import annotations

from typing import Any

from celery import bootsteps
from celery.worker.request import Request

FLUSH_SECONDS = 0.25


class FloeRequest(Request):  # type: ignore[misc]
    def send_event(self, type: str, **fields: Any) -> None:
        if type != "task-started":
            super().send_event(type, **fields)


class BatchedTaskEvents(bootsteps.StartStopStep):  # type: ignore[misc]
    requires = ("celery.worker.consumer.events:Events",)

    def start(self, c: Any) -> None:
        dispatcher, hub = getattr(c, "event_dispatcher", None), getattr(c, "hub", None)
        if dispatcher is None or hub is None or dispatcher.on_send_buffered is None:
            return
        pending = [False]

        def flush() -> None:
            pending[0] = False
            c._flush_events()

        def flush_soon() -> None:  # called for every buffered task event
            if not pending[0]:
                pending[0] = True
                hub.call_later(FLUSH_SECONDS, flush)

        dispatcher.on_send_buffered = flush_soon
