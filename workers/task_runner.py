"""The body of one ingest task, as plain code: claim, convert, record (first writer wins)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis
from pyiceberg.table import Table

from app.errors import PermanentError, SourceError
from app.iceberg.schema_evolution import FieldRequest, ReservedField, SchemaMode
from app.jobs.model import OPEN_STATES, TaskSpec
from app.jobs.service import JobService
from app.settings import Settings
from workers.conversion import SourcePart, write_task_manifest
from workers.paths import resolve_piece, resolve_sources
from workers.record_ranges import Span

log = logging.getLogger("floe.worker")
PROGRESS_EVERY_SECONDS = 2.0
# How long a task waits for Redis to come back before giving up. Retrying through Celery instead
# would need the broker (the same Redis) to publish the retry: during an outage Celery rejects the
# message, which then sits unacknowledged until the visibility timeout (found by chaos/redis_sigkill).
REDIS_OUTAGE_BUDGET_SECONDS = 300.0
T = TypeVar("T")


class JobTables:
    """The table each recent job writes, loaded once per job in this process (not once per task).

    The job's snapshot reservation fixes the schema and spec it writes; a table replaced under a
    running job is still refused, by the commit's table-uuid check instead of the task's.
    """

    def __init__(self, limit: int = 8) -> None:
        self.limit = limit
        self._tables: OrderedDict[str, Table] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str, load: Callable[[], Table]) -> Table:
        with self._lock:
            table = self._tables.get(job_id)
            if table is not None:
                self._tables.move_to_end(job_id)
                return table
        table = load()
        with self._lock:
            self._tables[job_id] = table
            while len(self._tables) > self.limit:
                self._tables.popitem(last=False)
        return table


_job_tables = JobTables()


def through_outage(fn: Callable[[], T], what: str, budget: float = REDIS_OUTAGE_BUDGET_SECONDS) -> T:
    """Call ``fn``, retrying with backoff while Redis is unreachable (up to ``budget`` seconds)."""
    deadline = time.monotonic() + budget
    delay = 0.25
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Redis unreachable during %s (%s); retrying in %.2fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def run_task(service: JobService, job_id: str, task_id: str, settings: Settings) -> str:
    """Run one task; returns what happened (accepted, duplicate, late, already-recorded, skipped: ...)."""
    data_base = settings.worker_data_base
    store = service.store
    job, recorded, spec = through_outage(lambda: store.task_context(job_id, task_id), "reading the job")
    if job is None:
        log.warning("task for unknown job ignored", extra={"job_id": job_id, "task_id": task_id})
        return "skipped: unknown job"
    if job.state not in OPEN_STATES:
        return f"skipped: job is {job.state.value}"
    if recorded is not None:
        # A redelivered or repeated task converts nothing: its manifest is already recorded.
        return "already-recorded"
    if data_base is None:
        raise SourceError("WORKER_DATA_BASE is not set on this worker host")
    spec = spec or TaskSpec(task_id)
    paths: list[Path | SourcePart]
    if spec.pieces:  # planned by the host: files and record-aligned spans of files
        paths = [
            SourcePart.of(resolve_piece(data_base, p.path), None if p.whole else Span(p.start, p.end))
            for p in spec.pieces
        ]
    else:
        paths = list(resolve_sources(data_base, task_id, spec.paths))
    table = _job_tables.get(job_id, lambda: service.load_table(job.table))
    last = [time.monotonic()]

    def progress(_rows: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_SECONDS:
            last[0] = now
            try:
                store.touch(job_id)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("progress not reported, Redis unreachable: %s", exc, extra={"job_id": job_id})

    def reserve(floor: int, requests: list[FieldRequest]) -> list[ReservedField]:
        # first reservation wins: every task of the job, on any host, writes a new column under one id
        table_uuid = job.snapshot.table_uuid
        return through_outage(
            lambda: store.reserve_fields(job_id, table_uuid, floor, requests), "reserving new columns"
        )

    descriptor = write_task_manifest(
        job.snapshot,
        table,
        paths,
        task_id,
        on_batch=progress,
        on_file=lambda *paths: through_outage(lambda: store.journal_file(job_id, *paths), "journaling files"),
        buffer_bytes=settings.write_buffer_bytes,
        schema_mode=SchemaMode(job.schema_mode),
        reserve=reserve,
        inline_bytes=settings.inline_manifest_bytes,
    )
    result = through_outage(
        lambda: service.record_manifest(job_id, task_id, descriptor, table, job, written_here=True),
        "recording the manifest",
    )
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


def run_tasks(
    service: JobService,
    job_id: str,
    task_ids: list[str],
    settings: Settings,
    hand_back: Callable[[list[str]], bool] | None = None,
) -> str:
    """Run a group of one host's tasks (one message, app.jobs.dispatch.message_groups) one after the
    other. A task that fails for good fails the job as it would alone (the rest then skip); any other
    error stops the group, naming its task (``floe_task_id``) for Celery's retry of the whole group —
    the tasks already recorded are not converted again. Once the group has run for
    ``settings.group_budget_ms``, the tasks not started go to ``hand_back`` (to be queued one message
    each; False when the job is no longer open and nothing was queued) instead. -> how many ended how
    ("3 accepted, ...")."""
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + settings.group_budget_ms / 1000
    for i, task_id in enumerate(task_ids):
        if i and hand_back is not None and time.monotonic() >= deadline:
            if hand_back(task_ids[i:]):
                outcomes["handed back"] += len(task_ids) - i
                log.info("group handed %d tasks back", len(task_ids) - i, extra={"job_id": job_id, "task_id": task_id})
            else:
                outcomes["skipped: job closed"] += len(task_ids) - i
            break
        try:
            outcomes[run_task(service, job_id, task_id, settings)] += 1
        except PermanentError as exc:
            log.error("task failed: %s", exc, extra={"job_id": job_id, "task_id": task_id})
            service.task_failed(job_id, task_id, str(exc), permanent=True)
            outcomes["failed"] += 1
        except Exception as exc:
            exc.floe_task_id = task_id  # type: ignore[attr-defined]
            raise
    return ", ".join(f"{n} {outcome}" for outcome, n in outcomes.items())
