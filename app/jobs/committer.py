"""Committing a job: one committer at a time, the snapshot protocol, then COMPLETED, then the deletes.

A job is committed under its commit lease (:mod:`app.jobs.lease`: short, renewed while the committer
works, so a dead committer's job is resumed within seconds); the snapshot protocol (:mod:`app.iceberg`)
makes the commit land exactly once whatever happens, and the job is marked COMPLETED — only while the
lease is still held — before the task manifests merged away are deleted (a committer that dies in
between leaves them to beat's sweep).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from app import keys
from app.errors import CommitConflict, CommitInProgress, FailedPrecondition, NotFound, PermanentError
from app.iceberg import commit_distributed_snapshot
from app.iceberg.commit import find_committed, unreferenced_files
from app.jobs.cleanup import JobFiles, TableLoader
from app.jobs.lease import CommitLease
from app.jobs.model import OPEN_STATES, Job, JobState
from app.jobs.store import LEASE_LOST, JobStore

log = logging.getLogger("floe.jobs")
# (job id, the state to end in, the reason, the states it may end from) -> whether it ended
FailJob = Callable[[str, JobState, str, Sequence[JobState]], bool]


class Committer:
    def __init__(self, store: JobStore, load_table: TableLoader, files: JobFiles, fail: FailJob) -> None:
        self.store = store
        self.load_table = load_table
        self.files = files
        self._fail = fail

    def commit(self, job: Job) -> tuple[Job, bool]:
        """Commit a ready job once. -> (job, already_committed)."""
        job_id = job.job_id
        if job.state == JobState.COMPLETED:
            return job, True
        if job.state.terminal:
            raise FailedPrecondition(
                f"job {job_id} is {job.state.value}: {job.failure_reason or 'no reason'}"
            )
        if job.state in OPEN_STATES and not job.ready_to_commit:
            raise FailedPrecondition(
                f"job {job_id} is not ready to commit: {job.manifests_accepted} of {job.expected} manifests "
                "accepted" + ("" if job.expected else " (no tasks registered yet)")
            )
        lease = CommitLease.acquire(self.store, job_id)
        if lease is None:
            raise CommitInProgress(
                f"a commit of job {job_id} is in progress; retry (should its committer have died, its "
                f"lease runs out within {keys.COMMIT_LEASE_MS // 1000} s and the commit is resumed)"
            )
        with lease:
            return self._commit_leased(job_id, lease)

    def _commit_leased(self, job_id: str, lease: CommitLease) -> tuple[Job, bool]:
        job = self.store.require(job_id)
        if job.state == JobState.COMPLETED:
            return job, True
        ok, state = self.store.transition(
            job_id, [*OPEN_STATES, JobState.COMMITTING], JobState.COMMITTING, lease=lease.token
        )
        if not ok:
            self._lease_lost(job_id, state)
            raise FailedPrecondition(f"job {job_id} is {state}; it cannot be committed")
        manifests = self.store.manifests(job_id)
        if not manifests:
            if not self.store.complete(job_id, None, lease=lease.token):
                return self._not_ours(job_id)
            if self.store.journaled_files(job_id):  # an attempt that died before finding no rows
                self.files.orphans(job_id, self.load_table(job.table), [])
            log.info("job completed with no rows", extra={"job_id": job_id})
            return self.store.require(job_id), False
        table = self.load_table(job.table)
        summary = {"floe.job-id": job_id, **job.snapshot.properties}
        if job.requester:
            summary.setdefault("floe.requester", job.requester)
        started = time.monotonic()
        try:
            outcome = commit_distributed_snapshot(table, job.snapshot, manifests, summary)
        except CommitConflict as exc:
            self.store.count("commit_conflict_retries_total", max(0, exc.attempts - 1))
            raise
        except PermanentError as exc:
            if lease.held():  # a committer whose lease ran out leaves the job to the one that took it
                self._fail(job_id, JobState.FAILED, f"commit failed: {exc}", [JobState.COMMITTING])
            raise
        self.store.count("commit_conflict_retries_total", max(0, outcome.attempts - 1))
        self.store.observe_commit_seconds(time.monotonic() - started)
        self.store.cleanup_pending(job_id)  # should this process die before the deletes, beat does them
        if not self.store.complete(job_id, outcome.snapshot_id, lease=lease.token):
            return self._not_ours(job_id)
        log.info("job committed", extra={"job_id": job_id, "snapshot_id": outcome.snapshot_id})
        # the merged-away task manifests (and originals replaced by remapped copies) go once the job is
        # marked complete, not before
        self.files.after_commit(job_id, table, manifests, outcome.to_delete)
        return self.store.require(job_id), False

    def _lease_lost(self, job_id: str, state: str) -> None:
        if state == LEASE_LOST:
            raise CommitInProgress(f"the commit lease of job {job_id} ran out; another committer resumes it")

    def _not_ours(self, job_id: str) -> tuple[Job, bool]:
        """Completing was refused: the lease ran out (another committer resumed the job, or beat found
        the commit on the table and completed it). Nothing is deleted here: that is the other's work."""
        job = self.store.require(job_id)
        log.warning(
            "lost the commit lease before completing the job; leaving it to the committer that took over",
            extra={"job_id": job_id, "state": job.state.value},
        )
        if job.state == JobState.COMPLETED:
            return job, False
        raise CommitInProgress(f"the commit lease of job {job_id} ran out; another committer resumes it")

    def complete_if_committed(self, job: Job) -> None:
        """A committer died after its catalog call: when the table shows the commit, complete the job."""
        try:
            table = self.load_table(job.table)
        except NotFound:
            return
        done = find_committed(table, job.snapshot, job.job_id)
        if done is None:
            return
        self.store.cleanup_pending(job.job_id)
        if self.store.complete(job.job_id, done.snapshot_id):
            log.info("completed a commit whose committer died", extra={"job_id": job.job_id})
            manifests = self.store.manifests(job.job_id)
            self.files.after_commit(job.job_id, table, manifests, unreferenced_files(table, done, manifests))
