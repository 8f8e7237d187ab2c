"""The body of one ingest task, as plain code: claim, convert, record (first writer wins)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from app.errors import SourceError
from app.jobs.model import OPEN_STATES, TaskSpec
from app.jobs.service import JobService
from workers.ingest import write_task_manifest
from workers.paths import resolve_sources

log = logging.getLogger("floe.worker")
PROGRESS_EVERY_SECONDS = 2.0


def run_ingest(service: JobService, job_id: str, task_id: str, data_base: Path | None) -> str:
    """Run one task; returns what happened (accepted, duplicate, late, already-recorded, skipped: ...)."""
    job = service.store.get(job_id)
    if job is None:
        log.warning("task for unknown job ignored", extra={"job_id": job_id, "task_id": task_id})
        return "skipped: unknown job"
    if job.state not in OPEN_STATES:
        return f"skipped: job is {job.state.value}"
    if service.store.manifest(job_id, task_id) is not None:
        # The seed's worker cache: a redelivered or repeated task re-reports what is recorded.
        return "already-recorded"
    if data_base is None:
        raise SourceError("WORKER_DATA_BASE is not set on this worker host")
    spec = service.store.task(job_id, task_id) or TaskSpec(task_id)
    paths = resolve_sources(data_base, task_id, spec.paths)
    table = service.load_table(job.table)
    last = [time.monotonic()]

    def progress(_rows: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_SECONDS:
            last[0] = now
            service.store.touch(job_id)

    descriptor = write_task_manifest(
        job.snapshot,
        table,
        paths,
        task_id,
        on_batch=progress,
        on_file=lambda path: service.store.journal_file(job_id, path),
    )
    result = service.record_manifest(job_id, task_id, descriptor, table)
    log.info(
        "task %s",
        result.status,
        extra={
            "job_id": job_id,
            "task_id": task_id,
            "rows": descriptor.added_rows_count if descriptor else 0,
        },
    )
    return result.status
