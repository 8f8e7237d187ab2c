"""Deleting the files a job no longer needs.

- after a commit: the task manifests the snapshot does not reference (merged away) and the orphans
  of killed or losing attempts, once the job is COMPLETED;
- after a failure or a cancel: every file of the job (with the copies a commit attempt made of its data
  files to remap field ids), unless the table shows it committed;
- beat's sweep: the first kind, for a job whose committer died between completing it and deleting.

Only files a job's own attempts journaled, or its recorded manifests name, are ever deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pyiceberg.table import Table

from app.errors import NotFound
from app.iceberg import ManifestDescriptor
from app.iceberg.commit import find_committed, unreferenced_files
from app.iceberg.field_remap import may_carry, remapped_path
from app.iceberg.files import delete_quietly
from app.jobs.model import JobState, TableRef
from app.jobs.store import JobStore

log = logging.getLogger("floe.jobs")

TableLoader = Callable[[TableRef], Table]
# a committer deletes within milliseconds of completing the job; the sweep leaves it this long
CLEANUP_GRACE_SECONDS = 60.0


class JobFiles:
    def __init__(self, store: JobStore, load_table: TableLoader) -> None:
        self.store = store
        self.load_table = load_table

    def after_commit(
        self, job_id: str, table: Table, manifests: list[ManifestDescriptor], unreferenced: list[str]
    ) -> None:
        """The job is COMPLETED: delete ``unreferenced`` (merged-away task manifests, data files replaced
        by copies with remapped field ids) and the orphans, then clear the job's pending-cleanup entry."""
        delete_quietly(table.io, unreferenced)
        self.orphans(job_id, table, manifests)
        self.store.cleanup_done(job_id)

    def orphans(
        self, job_id: str, table: Table, kept: list[ManifestDescriptor], never_files: frozenset[str] = frozenset()
    ) -> None:
        """Delete journaled files (started by any attempt of any task) that ``kept`` does not reference:
        what a killed or losing attempt left behind; ``never_files`` were journaled but never written
        (manifests recorded inline)."""
        referenced = {p for m in kept for p in (*m.data_files, m.manifest_path)}
        delete_quietly(table.io, sorted(self.store.journaled_files(job_id) - referenced - never_files))

    def after_failure(self, job_id: str) -> None:
        """Delete a failed or cancelled job's files, unless the table shows the job committed."""
        job = self.store.get(job_id)
        manifests = self.store.manifests(job_id)
        if job is None or not (manifests or self.store.journaled_files(job_id)):
            return
        try:
            table = self.load_table(job.table)
        except NotFound:
            return
        if find_committed(table, job.snapshot, job_id) is not None:
            log.error(
                "job is marked %s but the table holds its snapshot; keeping its files",
                job.state.value,
                extra={"job_id": job_id},
            )
            self.orphans(job_id, table, manifests)
            return
        inline = frozenset(m.manifest_path for m in manifests if m.inline is not None)  # never files
        delete_quietly(table.io, [p for m in manifests for p in (*m.data_files, m.manifest_path) if p not in inline])
        # copies a commit attempt made with remapped field ids (app.iceberg.field_remap), if any remain
        delete_quietly(
            table.io, [remapped_path(p) for m in manifests if may_carry(m) for p in (*m.data_files, m.manifest_path)]
        )
        self.orphans(job_id, table, [], inline)

    def sweep(self, now: float | None = None) -> list[str]:
        """Finish the cleanup of COMPLETED jobs whose committer died before its deletes."""
        now = time.time() if now is None else now
        swept = []
        for job_id in self.store.cleanups_pending_since(now - CLEANUP_GRACE_SECONDS):
            job = self.store.get(job_id)
            if job is not None and job.state == JobState.COMMITTING:
                continue  # the commit is still being resolved; completing it cleans up
            if job is None or job.state != JobState.COMPLETED:
                self.store.cleanup_done(job_id)  # its keys expired, or it did not commit: nothing to do
                continue
            try:
                table = self.load_table(job.table)
            except NotFound:
                self.store.cleanup_done(job_id)
                continue
            manifests = self.store.manifests(job_id)
            snapshot_id = job.committed_snapshot_id
            committed = table.metadata.snapshot_by_id(snapshot_id) if snapshot_id else None
            unreferenced = unreferenced_files(table, committed, manifests) if committed is not None else []
            self.after_commit(job_id, table, manifests, unreferenced)
            log.info("finished the cleanup of a committed job", extra={"job_id": job_id})
            swept.append(job_id)
        return swept
