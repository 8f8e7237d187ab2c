"""Hosts' liveness: which hosts a job waits on, and which of them have gone silent.

Every Celery worker host writes a heartbeat into Redis every :data:`app.keys.HEARTBEAT_SECONDS`
(workers/heartbeat.py; workers outside Celery call the ``Heartbeat`` RPC). A host is live while its
last heartbeat is at most :data:`app.keys.LIVE_SECONDS` old, so a frozen or dead worker shows
``live: false`` within LIVE_SECONDS + HEARTBEAT_SECONDS. A host is *silent* for a job when the job has
tasks queued or running on it and its worker is not live: the watchdog's failure reason names it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from app import keys
from app.jobs.model import OPEN_STATES, HostInfo, HostProgress, Job
from app.jobs.store import JobStore

HostView = tuple[HostProgress, HostInfo, bool]  # a job's host: its tasks, its worker's heartbeat, live


def hosts_of(store: JobStore, job: Job, now: float | None = None) -> list[HostView]:
    """Each host of the job: its plan and task counts, its worker's heartbeat, whether it is live."""
    now = time.time() if now is None else now
    progress = store.host_progress(job.job_id)
    info = {h.host: h for h in store.hosts(p.host for p in progress)}
    return [(p, info[p.host], info[p.host].live(now, keys.LIVE_SECONDS)) for p in progress]


def list_hosts(store: JobStore, now: float | None = None) -> list[tuple[HostInfo, bool]]:
    """Hosts whose worker heartbeat within :data:`app.keys.SEEN_RECENTLY_SECONDS`, each with whether
    it is live now."""
    now = time.time() if now is None else now
    return [
        (h, h.live(now, keys.LIVE_SECONDS))
        for h in store.hosts()
        if h.last_heartbeat is not None and now - h.last_heartbeat <= keys.SEEN_RECENTLY_SECONDS
    ]


def silent_hosts(hosts: Iterable[HostView]) -> list[HostView]:
    """Hosts with tasks queued or running and no live worker (tasks of the shared queue have no host;
    hosts that never planned are named as such by the watchdog)."""
    return [(p, info, live) for p, info, live in hosts if p.host and not live and (p.tasks_queued or p.tasks_running)]


def describe_silent(hosts: Iterable[HostView], now: float | None = None) -> str:
    """'host 2 (3 queued, 1 running; last heartbeat 41s ago), host 3 (5 queued; never heartbeat)'."""
    now = time.time() if now is None else now
    parts = []
    for p, info, _ in silent_hosts(hosts):
        work = ", ".join(
            f"{n} {what}" for n, what in ((p.tasks_queued, "queued"), (p.tasks_running, "running")) if n
        )
        beat = (
            "never heartbeat"
            if info.last_heartbeat is None
            else f"last heartbeat {max(0, int(now - info.last_heartbeat))}s ago"
        )
        parts.append(f"host {p.host} ({work}; {beat})")
    return ", ".join(parts)


def open_tasks_on_host(store: JobStore, host: str) -> int:
    """Tasks registered on ``host`` in open jobs that have neither a manifest nor a failure yet."""
    count = 0
    for job_id in store.active_ids():
        job = store.get(job_id)
        if job is None or job.state not in OPEN_STATES:
            continue
        done = store.finished_task_ids(job_id)
        count += sum(1 for t in store.tasks(job_id) if t.host == host and t.task_id not in done)
    return count
