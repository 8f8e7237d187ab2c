"""Job change notifications: every state script publishes the job id and state; watchers wake on it.

Every Lua script that bumps a job's ``version`` also PUBLISHes ``<job id> <state>`` on
:data:`app.keys.JOB_EVENTS`. One listener thread per process holds the subscription and wakes the
watchers of that job, so ``WatchJob`` streams (and anything else waiting on a job) learn of a change
as soon as it happens instead of polling Redis. Pub/sub is not durable: a message published while
the listener is reconnecting is lost, so watchers also wake at least every ``fallback`` seconds and
every watcher is woken after a reconnect. A wake-up is only a hint to re-read the job.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import redis

from app import keys
from app.jobs.store import JobStore

log = logging.getLogger("floe.events")
RECONNECT_DELAY_SECONDS = 0.5


class JobWatch:
    """Interest in one job; create it BEFORE reading the job, then ``wait`` for the next change."""

    def __init__(self, events: JobEvents, job_id: str) -> None:
        self._events = events
        self.job_id = job_id
        self._changed = threading.Event()
        self.state = ""  # the state the last notification named ("": unknown)

    def wait(self, timeout: float) -> bool:
        """Block until the job changed since the last wait (True) or ``timeout`` passed (False)."""
        changed = self._changed.wait(timeout)
        self._changed.clear()
        return changed

    def notify(self, state: str = "") -> None:
        self.state = state
        self._changed.set()

    def close(self) -> None:
        self._events.remove(self)

    def __enter__(self) -> JobWatch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class JobEvents:
    """The process's subscription to job changes (started on the first watch)."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._watches: dict[str, set[JobWatch]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.connected = threading.Event()

    def watch(self, job_id: str) -> JobWatch:
        w = JobWatch(self, job_id)
        with self._lock:
            self._watches.setdefault(job_id, set()).add(w)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._listen, name="floe-job-events", daemon=True)
                self._thread.start()
        return w

    def remove(self, w: JobWatch) -> None:
        with self._lock:
            watches = self._watches.get(w.job_id)
            if watches is not None:
                watches.discard(w)
                if not watches:
                    del self._watches[w.job_id]

    def watching(self) -> int:
        with self._lock:
            return sum(len(ws) for ws in self._watches.values())

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _wake(self, job_id: str | None, state: str = "") -> None:
        with self._lock:
            if job_id is None:
                targets = [w for ws in self._watches.values() for w in ws]
            else:
                targets = list(self._watches.get(job_id, ()))
        for w in targets:
            w.notify(state)

    def _listen(self) -> None:
        while not self._stop.is_set():
            pubsub = self._store.subscribe_job_events()
            try:
                pubsub.subscribe(keys.JOB_EVENTS)
                self._wake(None)  # anything published while we were not subscribed is unknown
                self.connected.set()  # after the wake-up: once connected, no subscription wake-up is pending
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        job_id, _, state = (data.decode() if isinstance(data, bytes) else str(data)).partition(" ")
                        self._wake(job_id, state)
            except (redis.RedisError, OSError) as exc:
                self.connected.clear()
                log.warning("job events: subscription lost (%s); reconnecting", exc)
                self._wake(None)
                self._stop.wait(RECONNECT_DELAY_SECONDS)
            finally:
                self.connected.clear()
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass
