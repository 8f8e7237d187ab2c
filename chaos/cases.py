"""The fault matrix: each case builds its own cluster, injects one fault and reads the table back.

Every case ends in :func:`verify`: the table is scanned and every row counted (rows expected and
found, duplicate ids, missing and unexpected ids), every snapshot is attributed to the job whose
``floe.job-id`` it carries (exactly one per committed job, none for a failed one, and the job's
recorded snapshot id is that snapshot), and every data file under the table location that no
snapshot's manifests reference is counted as a leftover file (required: none).

This module holds the registry (:data:`CASES`, :func:`run_case`) and the checks; the cases register
themselves from their modules, imported at the end in the order the matrix lists them:
:mod:`chaos.cases_processes` (Floe's own processes killed or doubled), :mod:`chaos.cases_outages`
(a host's link cut, Redis killed), :mod:`chaos.cases_table` (another writer, corrupt sources) and
:mod:`chaos.cases_catalog` (the catalog and the object store).
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from app.client import TaskArg
from app.jobs.model import JobState
from chaos.data import (
    JOB_ID_KEY,
    list_files,
    read_back,
    relative,
)
from chaos.harness import ChaosError, Cluster, wait_until
from chaos.topology import CURRENT, TOPOLOGIES

# Small write buffers and files, so a task writes (and must clean up) several files part-way through.
SMALL_WRITES = {"FLOE_WRITE_BUFFER_BYTES": str(4 << 20)}
TABLE_PROPS = {"write.target-file-size-bytes": str(4 << 20)}
BIG = 2_000_000  # rows: ~3 s of conversion, a window to hit a task while it runs
RESUMED_WITHIN = 30.0  # a dead committer's job is completed within this many seconds of its death


@dataclass
class CaseResult:
    case: str
    jobs: int = 0
    rows_expected: int = 0
    rows_found: int = 0
    duplicates: int = 0
    leftover_files: int = 0
    passed: bool = False
    seconds: float = 0.0
    error: str = ""
    notes: list[str] = field(default_factory=list)
    expected_ids: set[int] = field(default_factory=set, repr=False)


@contextlib.contextmanager
def observed(c: Cluster, res: CaseResult, expected_ids: set[int]) -> Iterator[Cluster]:
    """Record what the case expects; if it fails before :func:`verify`, count the table anyway."""
    res.expected_ids = expected_ids
    res.rows_expected = len(expected_ids)
    try:
        yield c
    except BaseException:
        with contextlib.suppress(Exception):
            if not res.rows_found:
                report = read_back(c.table(), expected_ids)
                res.rows_found, res.duplicates = report.rows, report.duplicates
                res.leftover_files = len(report.leftover_files)
        raise


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    run: Callable[[Path, CaseResult], None]
    topologies: tuple[str, ...] = TOPOLOGIES  # those it runs on (its fault needs what they have)


CASES: dict[str, Case] = {}


def case(
    name: str, description: str, topologies: tuple[str, ...] = TOPOLOGIES
) -> Callable[[Callable[[Path, CaseResult], None]], Callable[..., None]]:
    def register(fn: Callable[[Path, CaseResult], None]) -> Callable[[Path, CaseResult], None]:
        CASES[name] = Case(name, description, fn, topologies)
        return fn

    return register


def cases_for(topology: str) -> list[str]:
    return [name for name, c in CASES.items() if topology in c.topologies]


def run_case(name: str, home: Path, topology: str = "file-sql") -> CaseResult:
    """Run one case in ``home`` (its cluster, logs and table live there) on ``topology``; never raises."""
    result = CaseResult(name)
    started = time.monotonic()
    token = CURRENT.set(topology)
    try:
        CASES[name].run(home, result)
        result.passed = True
    except Exception as exc:  # noqa: BLE001 - a case's failure is its result
        result.error = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, ChaosError):
            result.error += "\n" + traceback.format_exc()
    finally:
        CURRENT.reset(token)
        result.seconds = time.monotonic() - started
    return result


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def start_job(c: Cluster, res: CaseResult, tasks: list[TaskArg], **kwargs: object) -> str:
    with c.connected() as client:
        reply = client.start_job("chaos", "events", requester="chaos", tasks=tasks, **kwargs)  # type: ignore[arg-type]
    res.jobs += 1
    return str(reply.job_id)


def task_files(table: Table, task_id: str) -> list[str]:
    """Data files a task has written (their names begin with the task id), on disk or in the bucket."""
    return [f for f in list_files(table, "data", ".parquet") if f.rpartition("/")[2].startswith(f"{task_id}-")]


def wait_mid_task(c: Cluster, table: Table, job_id: str, task_id: str) -> None:
    """Until the task has started writing data files but has not recorded its manifest."""
    wait_until(lambda: task_files(table, task_id), 60, f"task {task_id} to start writing", 0.02)
    if c.store.manifest(job_id, task_id) is not None:
        raise ChaosError(f"task {task_id} finished before the fault; make its source bigger")


def manifest_recorded(c: Cluster, job_id: str, task_id: str) -> bool:
    return c.store.manifest(job_id, task_id) is not None


def job_of(snapshot: Snapshot) -> str | None:
    """The Floe job a snapshot committed (its summary's ``floe.job-id``), if any."""
    return snapshot.summary.get(JOB_ID_KEY) if snapshot.summary is not None else None


def check(errors: list[str], ok: bool, message: str) -> None:
    if not ok:
        errors.append(message)


def verify(
    c: Cluster,
    res: CaseResult,
    expected_ids: set[int],
    completed: list[str],
    failed: list[str] = (),  # type: ignore[assignment]
    other_snapshots: int = 0,
    settle: float = 0.0,
) -> None:
    """Read the table back and hold every exactly-once invariant; raise ChaosError listing violations.

    ``settle``: files deleted asynchronously (a late task's own files) may take that long to go.
    """
    table = c.table()
    report = read_back(table, expected_ids)
    if report.leftover_files and settle:
        try:
            wait_until(
                lambda: not read_back(table, expected_ids).leftover_files, settle, "leftover files to go", 0.5
            )
        except ChaosError:
            pass
        report = read_back(table, expected_ids)
    res.rows_expected = len(expected_ids)
    res.rows_found = report.rows
    res.duplicates = report.duplicates
    res.leftover_files = len(report.leftover_files)
    errors: list[str] = []
    check(errors, report.rows == len(expected_ids), f"{report.rows} rows, expected {len(expected_ids)}")
    check(errors, report.duplicates == 0, f"{report.duplicates} duplicate rows")
    check(errors, report.missing == 0, f"{report.missing} expected ids missing")
    check(errors, report.unexpected == 0, f"{report.unexpected} ids nobody wrote")
    snapshots = {s.snapshot_id: s for s in table.catalog.load_table(table.name()).metadata.snapshots}
    for job_id in completed:
        job = c.store.get(job_id)
        check(
            errors,
            job is not None and job.state == JobState.COMPLETED,
            f"job {job_id} is {job and job.state}",
        )
        count = report.snapshots_by_job.get(job_id, 0)
        check(errors, count == 1, f"job {job_id} has {count} snapshots, expected exactly 1")
        if job is not None and job.committed_snapshot_id is not None:
            snap = snapshots.get(job.committed_snapshot_id)
            carried = job_of(snap) if snap is not None else None
            check(
                errors,
                carried == job_id,
                f"job {job_id}'s snapshot {job.committed_snapshot_id} carries {carried}",
            )
            check(
                errors,
                job.committed_snapshot_id == job.snapshot.snapshot_id,
                f"job {job_id} committed {job.committed_snapshot_id}, reserved {job.snapshot.snapshot_id}",
            )
    for job_id in failed:
        job = c.store.get(job_id)
        check(
            errors, job is not None and job.state == JobState.FAILED, f"job {job_id} is {job and job.state}"
        )
        count = report.snapshots_by_job.get(job_id, 0)
        check(errors, count == 0, f"failed job {job_id} has {count} snapshots")
    strays = set(report.snapshots_by_job) - set(completed)
    check(errors, not strays, f"snapshots of jobs that should not have committed: {sorted(strays)}")
    check(
        errors,
        report.other_snapshots == other_snapshots,
        f"{report.other_snapshots} snapshots of other writers, expected {other_snapshots}",
    )
    check(
        errors,
        not report.leftover_files,
        f"{len(report.leftover_files)} leftover data files (referenced by no snapshot), e.g. "
        + ", ".join(relative(table, p) for p in report.leftover_files[:3]),
    )
    if report.leftover_manifests:
        res.notes.append(f"{len(report.leftover_manifests)} unreferenced manifest/manifest-list files")
    if errors:
        raise ChaosError("; ".join(errors) + f"\n[{report.describe()}]\n" + c.logs(1500))


# The cases live in their own modules; importing them registers them here, in this order.
from chaos import cases_processes  # noqa: E402,F401,I001
from chaos import cases_outages  # noqa: E402,F401
from chaos import cases_table  # noqa: E402,F401
from chaos import cases_catalog  # noqa: E402,F401
