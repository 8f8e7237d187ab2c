"""A Celery worker host's heartbeat: one thread in the worker's main process writes the host's
heartbeat (and how many worker processes it runs) into Redis every :data:`app.keys.HEARTBEAT_SECONDS`.

It runs in the main process, started once the pool is up (``worker_ready``), so a host whose worker is
frozen (SIGSTOP, a hung main process) or dead stops beating even if a pool process lingers; the job
status shows the host ``live: false`` within LIVE_SECONDS + HEARTBEAT_SECONDS (app/jobs/liveness.py).
It has a Redis connection of its own with short timeouts, so a slow Redis never holds up the worker.
"""

from __future__ import annotations

import logging
import threading
import time

from app import keys
from app.jobs.store import JobStore

log = logging.getLogger("floe.heartbeat")
REDIS_TIMEOUT_SECONDS = 5.0


class Heartbeat:
    def __init__(self, store: JobStore, worker_id: str, concurrency: int, interval: float = keys.HEARTBEAT_SECONDS):
        self.store = store
        self.worker_id = worker_id
        self.concurrency = concurrency
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="floe-heartbeat", daemon=True)
        self._failing_since: float | None = None

    @classmethod
    def for_url(cls, redis_url: str, worker_id: str, concurrency: int) -> Heartbeat:
        store = JobStore.from_url(
            redis_url, 0, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        return cls(store, worker_id, concurrency)

    def start(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=REDIS_TIMEOUT_SECONDS * 2)
        self.store.close()

    def beat(self) -> None:
        try:
            self.store.worker_heartbeat(self.worker_id, concurrency=self.concurrency)
        except Exception as exc:  # noqa: BLE001 - Redis away: the tasks report it; keep beating
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.warning("heartbeat not written (%s); retrying every %.0fs", exc, self.interval)
            return
        if self._failing_since is not None:
            log.info("heartbeat written again after %.0fs", time.monotonic() - self._failing_since)
            self._failing_since = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()
