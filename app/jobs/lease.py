"""The commit lease: one committer per job at a time, and a dead committer's job resumed within seconds.

A committer takes the job's commit lock for :data:`app.keys.COMMIT_LEASE_MS` and a daemon thread renews
it every third of that while the committer works — also while it waits on a slow catalog call. A
committer that dies stops renewing, so the lease runs out and beat's auto-committer (or a client's
CommitJob retry) resumes the job: the snapshot protocol finds a commit that landed among main's
ancestors, and otherwise commits it, exactly once either way.

A committer that was only paused (a long GC, SIGSTOP, a network partition from Redis) may find its lease
gone when it wakes, and another committer at work. It must then not act on what it saw: ending the job
goes through :meth:`app.jobs.store.JobStore.transition` with the lease token, which Redis refuses
atomically once the lease was lost, and nothing is deleted after such a refusal.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from app import keys
from app.jobs.store import JobStore

log = logging.getLogger("floe.jobs")


class CommitLease:
    """A held commit lease; use as a context manager (renewed while inside, released on exit)."""

    def __init__(self, store: JobStore, job_id: str, token: str, ttl_ms: int | None = None) -> None:
        self.store = store
        self.job_id = job_id
        self.token = token
        self.ttl_ms = ttl_ms or keys.COMMIT_LEASE_MS
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name=f"commit-lease-{job_id}", daemon=True)

    @classmethod
    def acquire(cls, store: JobStore, job_id: str, ttl_ms: int | None = None) -> CommitLease | None:
        """The job's lease (for ``ttl_ms``, default :data:`app.keys.COMMIT_LEASE_MS`), or None while
        another committer holds it."""
        ttl_ms = ttl_ms or keys.COMMIT_LEASE_MS
        token = store.acquire_commit_lock(job_id, ttl_ms)
        return None if token is None else cls(store, job_id, token, ttl_ms)

    def __enter__(self) -> CommitLease:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.ttl_ms / 1000)
        try:
            self.store.release_commit_lock(self.job_id, self.token)
        except Exception as release_exc:  # noqa: BLE001 - an unreleased lease runs out by itself
            log.warning("could not release the commit lease: %s", release_exc, extra={"job_id": self.job_id})

    @property
    def lost(self) -> bool:
        """True once a renewal found the lease gone (it ran out, and maybe another committer took it)."""
        return self._lost.is_set()

    def held(self) -> bool:
        """Renew now: whether this committer still holds the lease (False when Redis cannot say)."""
        if self._lost.is_set():
            return False
        try:
            if self.store.renew_commit_lock(self.job_id, self.token, self.ttl_ms):
                return True
        except Exception as exc:  # noqa: BLE001 - not confirmed is not held
            log.warning("could not renew the commit lease: %s", exc, extra={"job_id": self.job_id})
            return False
        self._lost.set()
        return False

    def _renew_loop(self) -> None:
        interval = self.ttl_ms / 3000
        while not self._stop.wait(interval):
            try:
                renewed = self.store.renew_commit_lock(self.job_id, self.token, self.ttl_ms)
            except Exception as exc:  # noqa: BLE001 - Redis down: try again; the lease may run out meanwhile
                log.warning("could not renew the commit lease: %s", exc, extra={"job_id": self.job_id})
                continue
            if not renewed:
                log.warning("the commit lease ran out; another committer may resume", extra={"job_id": self.job_id})
                self._lost.set()
                return
