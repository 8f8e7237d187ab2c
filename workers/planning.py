"""A host plans its own files into tasks: only a host sees its own disk.

The planning task lists and sizes what the host's globs match (below its WORKER_DATA_BASE), then cuts
the bytes into at most one task per worker process of the host, each at least ``MIN_TASK_BYTES``
(``FLOE_PLAN_MIN_TASK_BYTES``; a small job is one task): many small files are packed into one task, a big file is split — CSV and
JSON lines by byte ranges that start and end on record boundaries, Parquet by row groups, gzip files
whole (:mod:`workers.record_ranges`) — and the pieces are balanced by bytes (largest first onto the
least loaded task). Each task then writes at most one file per partition, rolled at
``write.target-file-size-bytes``, so a planned job writes at most hosts x processes x partitions files
plus the rolls the target size asks for.

The plan is registered exactly once (first plan wins in Redis); a redelivered or duplicated planning
task finds it registered and only makes sure its tasks were published.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.errors import SourceError
from app.formats import SourceFormat, source_format
from app.jobs.model import OPEN_STATES, HostPlan, Piece, TaskSpec
from app.jobs.service import JobService
from app.jobs.validation import PLANNED_TASK_PREFIX
from app.settings import DEFAULT_PLAN_MIN_TASK_BYTES, Settings
from workers.paths import find_host_files
from workers.record_ranges import Span, plan_spans

log = logging.getLogger("floe.planning")
MIN_TASK_BYTES = DEFAULT_PLAN_MIN_TASK_BYTES
SPLIT_SLACK = 1.25  # a file this much bigger than a task's share is split


@dataclass(frozen=True)
class SizedFile:
    relative: str  # to WORKER_DATA_BASE
    path: Path
    size: int
    fmt: SourceFormat


Splitter = Callable[[Path, str, bool, int], "list[Span] | None"]


def _weighted_pieces(f: SizedFile, target: int, split: Splitter) -> list[tuple[int, Piece]]:
    if f.fmt.gzip or f.size <= target * SPLIT_SLACK:
        return [(f.size, Piece(f.relative))]
    spans = split(f.path, f.fmt.name, f.fmt.gzip, target)
    if not spans:
        return [(f.size, Piece(f.relative))]
    if f.fmt.name == "parquet":  # row-group spans: weigh by their share of the groups
        groups = spans[-1].end
        return [(max(1, f.size * (s.end - s.start) // groups), Piece(f.relative, s.start, s.end)) for s in spans]
    return [(s.end - s.start, Piece(f.relative, s.start, s.end)) for s in spans]


def plan_tasks(
    files: Sequence[SizedFile],
    processes: int,
    min_task_bytes: int = MIN_TASK_BYTES,
    split: Splitter = plan_spans,
) -> list[tuple[Piece, ...]]:
    """The pieces of each task, balanced by bytes over at most ``processes`` tasks."""
    if not files:
        return []
    total = sum(f.size for f in files)
    count = max(1, min(processes, math.ceil(total / max(1, min_task_bytes))))
    target = math.ceil(total / count)
    weighted = [wp for f in files for wp in _weighted_pieces(f, target, split)]
    weighted.sort(key=lambda wp: (-wp[0], wp[1].path, wp[1].start))
    bins: list[tuple[int, int]] = [(0, i) for i in range(count)]  # (bytes, task index)
    tasks: list[list[Piece]] = [[] for _ in range(count)]
    for weight, piece in weighted:
        load, index = heapq.heappop(bins)
        tasks[index].append(piece)
        heapq.heappush(bins, (load + weight, index))
    return [tuple(sorted(t, key=lambda p: (p.path, p.start))) for t in tasks if t]


def _sized(base: Path, files: list[Path]) -> list[SizedFile]:
    root = base.resolve()
    return [SizedFile(str(p.relative_to(root)), p, p.stat().st_size, source_format(p)) for p in files]


def host_processes(settings: Settings, reported: int = 0) -> int:
    """The worker processes planning balances over: what the worker reported, else its setting, else cores."""
    return reported or settings.worker_concurrency or os.cpu_count() or 1


def run_plan(service: JobService, job_id: str, host: str, settings: Settings, processes: int) -> str:
    """Plan ``host``'s sources for the job, register the plan once, publish its tasks."""
    store = service.store
    job = store.get(job_id)
    if job is None:
        return "skipped: unknown job"
    if job.state not in OPEN_STATES:
        return f"skipped: job is {job.state.value}"
    globs = store.host_sources(job_id, host)
    if globs is None:
        return f"skipped: the job has no sources on host {host}"
    if host in store.plans(job_id):
        sent = service.publish_plan(job_id, host)
        return "already planned" + (f"; published its {sent} tasks" if sent else "")
    if settings.worker_data_base is None:
        raise SourceError(f"WORKER_DATA_BASE is not set on host {host}: it cannot plan its sources")
    found, unmatched = find_host_files(settings.worker_data_base, globs)
    files = _sized(settings.worker_data_base, found)
    pieces = plan_tasks(files, processes, settings.plan_min_task_bytes)
    tasks = [
        TaskSpec(f"{PLANNED_TASK_PREFIX}{host}:{i:05d}", host, (), p) for i, p in enumerate(pieces, start=1)
    ]
    note = f"no file matches {', '.join(repr(g) for g in unmatched)}" if unmatched else ""
    plan = HostPlan(len(tasks), len(files), sum(f.size for f in files), note)
    outcome, state = store.register_plan(job_id, host, plan, tasks)
    log.info(
        "host planned",
        extra={"job_id": job_id, "host": host, "tasks": len(tasks), "files": len(files), "outcome": outcome},
    )
    if outcome not in ("registered", "already"):
        return f"skipped: job is {state or 'gone'}"
    sent = service.publish_plan(job_id, host)
    service.commit_if_ready(job_id)
    return f"{outcome}: {plan.tasks} tasks over {plan.files} files ({plan.bytes} bytes); published {sent}"
