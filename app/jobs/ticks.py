"""Beat's two ticks, run on the control queue every ``FLOE_WATCHDOG_INTERVAL_SECONDS`` (two beats are safe).

- The watchdog fails a job whose last progress is older than its ``job_timeout_seconds``, with a reason
  that says what it waited for: the manifests missing, the hosts that never planned, and the hosts gone
  silent (tasks queued or running there, no live worker: :mod:`app.jobs.liveness`).
- The auto-committer finishes what a dead process left: it publishes what a dead dispatcher left
  unpublished (:mod:`app.jobs.dispatch`), commits ready auto-commit jobs, resumes commits whose
  committer died, and deletes the files finished commits left unreferenced.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from app.errors import CommitInProgress, FailedPrecondition
from app.jobs.liveness import describe_silent, hosts_of
from app.jobs.model import OPEN_STATES, JobState

if TYPE_CHECKING:
    from app.jobs.service import JobService

log = logging.getLogger("floe.jobs")


def watchdog_tick(service: JobService, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    store = service.store
    failed = []
    for job_id in store.active_ids():
        job = store.get(job_id)
        if job is None or job.state not in OPEN_STATES or now <= job.deadline:
            continue
        idle = int(now - job.last_progress_at)
        reason = (
            f"timed out: no progress for {idle}s (job_timeout_seconds={job.job_timeout_seconds}); "
            f"{job.manifests_accepted} of {job.expected} manifests accepted"
        )
        if job.planning:
            waiting = sorted(set(store.sources_by_host(job_id)) - set(store.plans(job_id)))
            reason += f"; hosts that never planned their sources: {', '.join(waiting)}"
        silent = describe_silent(hosts_of(store, job, now), now)
        if silent:
            reason += f"; silent hosts (tasks waiting, no live worker): {silent}"
        if service.fail_job(job_id, reason):
            store.count("watchdog_failed_jobs_total")
            failed.append(job_id)
    return failed


def autocommit_tick(service: JobService, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    store = service.store
    service.files.sweep(now)
    try:
        service.dispatcher.sweep()
    except Exception as exc:  # noqa: BLE001 - the next tick retries; commits must not wait on it
        log.warning("dispatch sweep failed, retried next tick: %s", exc)
    committed = []
    for job_id in store.active_ids():
        job = store.get(job_id)
        if job is None:
            continue
        if job.state == JobState.COMMITTING and store.commit_locked(job_id):
            # A committer may have died holding the lock after its catalog call: the table says.
            service.committer.complete_if_committed(job)
            continue
        resume = job.state == JobState.COMMITTING
        if (job.state in OPEN_STATES and job.auto_commit and job.ready_to_commit) or resume:
            try:
                service.commit(job_id)
                committed.append(job_id)
            except (FailedPrecondition, CommitInProgress) as exc:
                log.info("auto-commit skipped: %s", exc, extra={"job_id": job_id})
            except Exception as exc:  # noqa: BLE001 - one job's catalog trouble must not stop the tick
                log.warning("auto-commit failed, retried next tick: %s", exc, extra={"job_id": job_id})
    return committed
