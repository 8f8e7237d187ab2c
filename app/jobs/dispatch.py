"""Publishing a job's Celery messages exactly once, after StartJob has answered.

StartJob records the job, its tasks and its *dispatch list* (every message the job publishes: one per
task, one planning task per source host, in chunks of 500) in one script, with the dispatch lease handed
to the caller, and answers at once. A dispatcher then renders the entries into broker messages chunk by
chunk and publishes each chunk with one script that LPUSHes the messages onto their queues (the broker
is the same Redis; kombu's Redis transport delivers a message exactly so) and advances the job's cursor
— only while it still holds the lease. A chunk is therefore published and counted, or neither: a dispatcher
killed at any point leaves no message published twice and none lost, and whoever takes the lease next
(another coordinator's sweep, beat's auto-committer tick, or the next call that adds entries) goes on
from the cursor once the lease has run out (:data:`app.keys.DISPATCH_LEASE_MS`).

Entries appended later (AssignTasks, a host's plan) go through the same list and are published by the
process that appended them, or by the dispatcher holding the lease: that one only gives the lease back
when nothing is left (the release script checks, atomically).

A host with many tasks in a chunk gets them several to a message (:func:`message_groups`): a message
costs its worker's Celery consumer, the pool's task tracing, the broker and Flower about as much as a
tiny task's own work, so a job of thousands of tiny tasks runs in up to :data:`MAX_GROUP` times fewer
messages, while every host keeps at least :data:`GROUP_SPREAD` messages per chunk to spread over its
processes. A group's tasks run one after the other in one process; one that has run for
``FLOE_GROUP_BUDGET_MS`` hands the tasks it has not started back to the queue, a message each
(workers.task_runner.run_tasks), so tasks that turn out big still spread over the host's processes.

In the coordinator the dispatcher runs in a background thread (:meth:`Dispatcher.start`), taking one
chunk per job in turn so a job of 10,000 tasks does not hold up the jobs started after it; elsewhere
(workers, beat, tests) :meth:`Dispatcher.hand_over` publishes before it returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Protocol

from app import keys
from app.jobs.dispatch_store import Message, Outgoing
from app.jobs.store import JobStore

log = logging.getLogger("floe.dispatch")
SWEEP_SECONDS = 5.0  # a background dispatcher looks for jobs left unpublished this often
OPEN = ("PENDING", "RUNNING")
MAX_GROUP = 16  # ingest tasks per message, at most
GROUP_SPREAD = 16  # a host's tasks are grouped only while it keeps at least this many messages per chunk


def message_groups(entries: list[Outgoing]) -> list[list[Outgoing]]:
    """The chunk's entries, one list per message: a planning entry alone; a host's ingest tasks in
    groups of ``n // GROUP_SPREAD`` (1 to :data:`MAX_GROUP`) when it has ``n`` in the chunk, in order."""
    by_host: dict[str, list[Outgoing]] = {}
    out: list[list[Outgoing]] = []
    for entry in entries:
        if entry.task_id:
            by_host.setdefault(entry.host, []).append(entry)
        else:
            out.append([entry])
    for tasks in by_host.values():
        size = max(1, min(MAX_GROUP, len(tasks) // GROUP_SPREAD))
        out.extend(tasks[i : i + size] for i in range(0, len(tasks), size))
    return out


class MessageRenderer(Protocol):
    """Makes broker messages (the Celery edge implements it: app.celery_app.CeleryTaskQueue)."""

    def render(self, job_id: str, entries: list[Outgoing]) -> list[Message]: ...


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        renderer: MessageRenderer,
        lease_ms: int = keys.DISPATCH_LEASE_MS,
        sweep_seconds: float = SWEEP_SECONDS,
    ) -> None:
        self.store = store
        self.renderer = renderer
        self.lease_ms = lease_ms
        self.sweep_seconds = sweep_seconds
        self._incoming: queue.Queue[tuple[str, str | None]] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- one job, here and now -------------------------------------------------------------------

    @property
    def background(self) -> bool:
        """Whether hand_over only queues the job for the background thread."""
        return self._incoming is not None

    def new_token(self) -> str:
        return self.store.new_dispatch_token()

    def hand_over(self, job_id: str, token: str | None = None) -> None:
        """Publish the job's pending entries: in the background when started, else before returning.
        ``token``: the lease the job was created with (None: take the lease, unless another holds it)."""
        if self._incoming is not None:
            self._incoming.put((job_id, token))
        else:
            self.dispatch(job_id, token)

    def dispatch(self, job_id: str, token: str | None = None) -> int:
        """Publish what the job has not published yet, holding its lease. -> messages published here
        (0 also when another dispatcher holds the lease: that one publishes them)."""
        if token is None:
            token = self.store.acquire_dispatch_lease(job_id, self.lease_ms)
            if token is None:
                return 0
        published = 0
        try:
            while True:
                go_on, n = self._step(job_id, token)
                published += n
                if not go_on:
                    return published
        except BaseException:
            self._drop(job_id, token)
            raise

    def sweep(self) -> int:
        """Finish the dispatch of every job whose dispatcher died (its lease ran out). -> messages."""
        return sum(self.dispatch(job_id) for job_id in self.store.dispatch_pending())

    def _step(self, job_id: str, token: str) -> tuple[bool, int]:
        """Publish one chunk. -> (whether this dispatcher goes on with the job, messages published)."""
        batch = self.store.dispatch_read(job_id)
        if batch.state not in OPEN:  # finished (or gone): nothing more is published for it
            self.store.release_dispatch_lease(job_id, token)
            return False, 0
        if not batch.entries:
            return not self.store.release_dispatch_lease(job_id, token), 0
        messages = self.renderer.render(job_id, batch.entries)
        outcome, detail = self.store.dispatch_publish(job_id, token, batch.cursor, 1, messages, self.lease_ms)
        if outcome == "ok":
            cursor, _, total = detail.partition("/")
            if cursor == total:
                log.info("job dispatched", extra={"job_id": job_id, "chunks": int(total)})
            return True, len(messages)
        if outcome == "lost":
            log.warning("dispatch lease lost; another dispatcher goes on", extra={"job_id": job_id})
            return False, 0
        if outcome == "moved":
            return True, 0
        self.store.release_dispatch_lease(job_id, token)  # closed or gone
        return False, 0

    def _drop(self, job_id: str, token: str) -> None:
        try:
            self.store.drop_dispatch_lease(job_id, token)
        except Exception as exc:  # noqa: BLE001 - an unreleased lease runs out by itself
            log.warning("could not give the dispatch lease back: %s", exc, extra={"job_id": job_id})

    # --- in the background (the coordinator) -----------------------------------------------------

    def start(self) -> None:
        """Dispatch in a background thread from now on (hand_over returns at once)."""
        if self._thread is not None:
            return
        self._incoming = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="floe-dispatch", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._incoming is not None:
            self._incoming.put(("", None))
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        assert self._incoming is not None
        active: deque[tuple[str, str]] = deque()
        next_sweep = time.monotonic() + self.sweep_seconds
        while not self._stop.is_set():
            item: tuple[str, str | None] | None
            try:
                if active:
                    item = self._incoming.get_nowait()
                else:
                    item = self._incoming.get(timeout=max(0.01, next_sweep - time.monotonic()))
            except queue.Empty:
                item = None
            try:
                if item is not None and item[0]:
                    self._take(active, *item)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_seconds
                    for job_id in self.store.dispatch_pending():
                        self._take(active, job_id, None)
                if active:
                    job_id, token = active.popleft()  # one chunk per job in turn
                    try:
                        go_on, _ = self._step(job_id, token)
                    except Exception:
                        self._drop(job_id, token)
                        raise
                    if go_on:
                        active.append((job_id, token))
            except Exception as exc:  # noqa: BLE001 - Redis or broker trouble: the sweep retries
                log.warning("dispatch failed, retried by the next sweep: %s", exc)
                self._stop.wait(1.0)
        for job_id, token in active:  # stopping: whoever sweeps next goes on at once
            self._drop(job_id, token)

    def _take(self, active: deque[tuple[str, str]], job_id: str, token: str | None) -> None:
        if any(job_id == held for held, _ in active):
            return
        token = token or self.store.acquire_dispatch_lease(job_id, self.lease_ms)
        if token is not None:
            active.append((job_id, token))
