"""The job store's dispatch: each job's list of messages to publish, its cursor and its lease.

Part of :class:`app.jobs.store.JobStore` (its only Redis client, ``_r``); kept apart so each file reads
as one concern. The scripts are in :mod:`app.jobs.dispatch_scripts`; how they are used, in
:mod:`app.jobs.dispatch`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from app import keys
from app.jobs import dispatch_scripts
from app.jobs.lazy_scripts import lazy_script


@dataclass(frozen=True)
class Outgoing:
    """One entry of a job's dispatch list: an ingest task (``task_id`` set; ``host`` '' is the shared
    ingest queue) or a host's planning task (``task_id`` '')."""

    host: str
    task_id: str = ""

    @classmethod
    def parse(cls, entry: str) -> Outgoing:
        """'@<host>', '<host>/<task_id>' or '<host>/<task_id>\\1<spec JSON>' (a task StartJob named)."""
        if entry.startswith("@"):
            return cls(entry[1:])
        host, _, task_id = entry.partition("\1")[0].partition("/")
        return cls(host, task_id)

    @property
    def queue(self) -> str:
        return f"host-{self.host}" if self.host else "ingest"


@dataclass(frozen=True)
class Message:
    """A rendered broker message: the Redis list it goes onto, its body as the transport stores it,
    and its Celery task id."""

    key: str
    payload: str
    celery_id: str


@dataclass(frozen=True)
class DispatchBatch:
    state: str  # the job's state ('' when the job is gone)
    cursor: int  # entries published so far
    entries: list[Outgoing]  # the next chunk of entries to publish


class DispatchStore:
    _r: Any  # the store's Redis client (made by JobStore)

    def _dispatch_script(self, name: str) -> Any:
        return lazy_script(self, dispatch_scripts, name)

    def new_dispatch_token(self) -> str:
        return uuid.uuid4().hex

    def acquire_dispatch_lease(self, job_id: str, ttl_ms: int = keys.DISPATCH_LEASE_MS) -> str | None:
        """The job's dispatch lease for ``ttl_ms``: its token, or None while another dispatcher holds it."""
        token = self.new_dispatch_token()
        return token if self._r.set(keys.dispatch_lock(job_id), token, nx=True, px=ttl_ms) else None

    def dispatch_read(self, job_id: str) -> DispatchBatch:
        """The job's state, its cursor and the chunk of entries at the cursor (none: all published)."""
        out = self._dispatch_script("DISPATCH_READ")(keys=[keys.job(job_id), keys.job_dispatch(job_id)], args=[])
        if not out or not out[0]:
            return DispatchBatch("", 0, [])
        chunk = out[2] if len(out) > 2 else None
        entries = [Outgoing.parse(e) for e in str(chunk).split("\n")] if chunk else []
        return DispatchBatch(str(out[0]), int(out[1]), entries)

    def dispatch_publish(
        self,
        job_id: str,
        token: str,
        cursor: int,
        consumed: int,
        messages: list[Message],
        ttl_ms: int = keys.DISPATCH_LEASE_MS,
    ) -> tuple[str, str]:
        """LPUSH ``messages`` and advance the cursor by ``consumed`` chunks, atomically, if ``token``
        still holds the lease and the cursor is still ``cursor``. -> (outcome, detail); see
        DISPATCH_PUBLISH (ok: detail 'cursor/chunks')."""
        args: list[Any] = [job_id, token, cursor, consumed, ttl_ms]
        for m in messages:
            args += [m.payload, m.celery_id]
        outcome, detail = self._dispatch_script("DISPATCH_PUBLISH")(
            keys=[
                keys.job(job_id),
                keys.job_dispatch(job_id),
                keys.dispatch_lock(job_id),
                keys.job_celery_ids(job_id),
                keys.DISPATCH_PENDING,
                keys.job_tasks(job_id),
                *(m.key for m in messages),
            ],
            args=args,
        )
        return str(outcome), str(detail)

    def release_dispatch_lease(self, job_id: str, token: str) -> bool:
        """Give the lease back -> True; False when entries arrived meanwhile (keep dispatching)."""
        return bool(
            self._dispatch_script("DISPATCH_RELEASE")(
                keys=[
                    keys.job(job_id),
                    keys.job_dispatch(job_id),
                    keys.dispatch_lock(job_id),
                    keys.DISPATCH_PENDING,
                ],
                args=[token, job_id],
            )
        )

    def drop_dispatch_lease(self, job_id: str, token: str) -> None:
        """Give the lease back whatever is left (a dispatcher that failed: another takes over at once)."""
        self._dispatch_script("DISPATCH_DROP")(keys=[keys.dispatch_lock(job_id)], args=[token])

    def materialize_specs(self, job_id: str) -> None:
        """Store the specs of the job's tasks not yet published (they travel in its dispatch list)."""
        self._dispatch_script("MATERIALIZE_ALL")(
            keys=[keys.job(job_id), keys.job_tasks(job_id), keys.job_dispatch(job_id)], args=[]
        )

    def dispatch_pending(self) -> list[str]:
        """Ids of jobs with entries not yet published."""
        return sorted(self._r.smembers(keys.DISPATCH_PENDING))

    def dispatch_progress(self, job_id: str) -> tuple[int, int]:
        """(entries published, entries in the job's dispatch list)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hget(keys.job(job_id), "dispatched")
        pipe.llen(keys.job_dispatch(job_id))
        published, total = pipe.execute()
        return int(published or 0), int(total or 0)
