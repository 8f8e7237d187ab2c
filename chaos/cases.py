"""The fault matrix: each case builds its own cluster, injects one fault and reads the table back.

Every case ends in :func:`verify`: the table is scanned and every row counted (rows expected and
found, duplicate ids, missing and unexpected ids), every snapshot is attributed to the job whose
``floe.job-id`` it carries (exactly one per committed job, none for a failed one, and the job's
recorded snapshot id is that snapshot), and every data file under the table location that no
snapshot's manifests reference is counted as a leftover file (required: none).
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from app import keys
from app.client import TaskArg
from app.jobs.model import JobState
from chaos.data import (
    ARROW_SCHEMA,
    JOB_ID_KEY,
    arrow_rows,
    file_exists,
    list_files,
    make_table,
    read_back,
    relative,
    truncate_file,
    write_csv,
)
from chaos.harness import ChaosError, Cluster, Proc, wait_until
from chaos.topology import CURRENT, TOPOLOGIES

# Small write buffers and files, so a task writes (and must clean up) several files part-way through.
SMALL_WRITES = {"FLOE_WRITE_BUFFER_BYTES": str(4 << 20)}
TABLE_PROPS = {"write.target-file-size-bytes": str(4 << 20)}
BIG = 2_000_000  # rows: ~3 s of conversion, a window to hit a task while it runs
VISIBILITY_TIMEOUT = 4
REDIS_DOWN_SECONDS = 3.0
REDIS_RECOVERY_SECONDS = 60  # the job needs ~3 s once Redis is back; 60 s is ample
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


# --------------------------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------------------------


@case("three_hosts", "3 netns hosts, one job (CSV + gzip CSV on each): one snapshot, every row once")
def three_hosts(home: Path, res: CaseResult) -> None:
    expected = set(range(300_000))
    with Cluster(home, SMALL_WRITES) as c, observed(c, res, expected):
        make_table(c.catalog, "chaos.events", TABLE_PROPS)
        tasks = []
        for h in (1, 2, 3):
            base = (h - 1) * 100_000
            write_csv(c.data_dir(h) / "part-1.csv", base, 60_000)
            write_csv(c.data_dir(h) / "more" / "part-2.csv.gz", base + 60_000, 40_000)
            tasks.append(TaskArg(f"h{h}", str(h), ["part-1.csv", "more"]))
        c.start_coordinator()
        c.start_workers([1, 2, 3])
        for h in (1, 2, 3):
            c.probe_from_host(h)
        job_id = start_job(c, res, tasks)
        job = c.wait_job(job_id)
        if job.state != JobState.COMPLETED or job.manifests_accepted != 3 or job.rows_written != 300_000:
            raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
        verify(c, res, expected, [job_id])


@case(
    "worker_sigkill",
    "a host's worker SIGKILLed mid-task; a new worker after the visibility timeout redelivers",
)
def worker_sigkill(home: Path, res: CaseResult) -> None:
    env = {**SMALL_WRITES, "FLOE_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_TIMEOUT)}
    expected = set(range(BIG + 50_000))
    with Cluster(home, env) as c, observed(c, res, expected):
        table = make_table(c.catalog, "chaos.events", TABLE_PROPS)
        write_csv(c.data_dir(1) / "big.csv", 0, BIG)
        write_csv(c.data_dir(2) / "small.csv", BIG, 50_000)
        c.start_coordinator()
        worker, _ = c.start_workers([1, 2])
        job_id = start_job(c, res, [TaskArg("t1", "1", ["big.csv"]), TaskArg("t2", "2", ["small.csv"])])
        # Given host 1's worker dies (SIGKILL, whole process group) while it converts
        wait_mid_task(c, table, job_id, "t1")
        worker.kill()
        killed_files = task_files(table, "t1")
        res.notes.append(f"killed attempt had started {len(killed_files)} data files")
        if manifest_recorded(c, job_id, "t1"):
            raise ChaosError("t1 recorded its manifest before the kill")
        # When a replacement starts on the same host queue once the visibility timeout has passed
        # (kombu restores unacknowledged messages when a worker starts polling)
        time.sleep(VISIBILITY_TIMEOUT + 1)
        c.start_worker(1, name="worker-1-again")
        job = c.wait_job(job_id, timeout=120)
        # Then the task was redelivered and every row landed once
        if job.state != JobState.COMPLETED:
            raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
        verify(c, res, expected, [job_id])


@case("coordinator_sigkill", "coordinator SIGKILLed between StartJob and commit, restarted mid-job")
def coordinator_sigkill(home: Path, res: CaseResult) -> None:
    expected = set(range(200_000))
    with Cluster(home, SMALL_WRITES) as c, observed(c, res, expected):
        make_table(c.catalog, "chaos.events", TABLE_PROPS)
        write_csv(c.data_dir(1) / "a.csv", 0, 100_000)
        write_csv(c.data_dir(2) / "b.csv", 100_000, 100_000)
        coordinator = c.start_coordinator()
        c.add_host(1), c.add_host(2)
        job_id = start_job(c, res, [TaskArg("t1", "1", ["a.csv"]), TaskArg("t2", "2", ["b.csv"])])
        # Given the coordinator is SIGKILLed right after StartJob answered, before any task ran (and
        # perhaps before its dispatcher published them: beat's sweep does once its lease runs out)
        coordinator.kill()
        c.start_worker(1)
        c.start_beat()
        wait_until(lambda: manifest_recorded(c, job_id, "t1"), 60, "host 1's manifest")
        # When it restarts while the job is half done, and the second host comes up
        c.start_coordinator(name="coordinator-2")
        c.start_worker(2)
        job = c.wait_job(job_id)
        with c.connected() as client:
            status = client.status(job_id)
        # Then the job committed once, and the new coordinator reports it
        if job.state != JobState.COMPLETED or status.committed_snapshot_id != job.snapshot.snapshot_id:
            raise ChaosError(f"job ended {job.summary()}, coordinator says {status}\n{c.logs()}")
        verify(c, res, expected, [job_id])


@case(
    "commit_sigkill",
    "coordinator SIGKILLed inside CommitJob, after the catalog call, before COMPLETED; beat resumes "
    "within 30 s",
)
def commit_sigkill(home: Path, res: CaseResult) -> None:
    import sys

    expected = set(range(100_000))
    with Cluster(home, SMALL_WRITES) as c, observed(c, res, expected):
        make_table(c.catalog, "chaos.events", TABLE_PROPS)
        write_csv(c.data_dir(1) / "a.csv", 0, 50_000)
        write_csv(c.data_dir(2) / "b.csv", 50_000, 50_000)
        crashing = c.start_coordinator(
            name="coordinator-crashing", argv=[sys.executable, "-m", "chaos.crashing_coordinator"]
        )
        c.start_workers([1, 2])
        job_id = start_job(
            c, res, [TaskArg("t1", "1", ["a.csv"]), TaskArg("t2", "2", ["b.csv"])], auto_commit=False
        )
        wait_until(lambda: c.job(job_id).ready_to_commit, 60, "ready_to_commit")
        # Given CommitJob kills the coordinator right after the catalog accepted the snapshot
        with c.connected() as client:
            try:
                client.commit(job_id)
                raise ChaosError("CommitJob answered; the coordinator should have died inside it")
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
        assert crashing.popen is not None
        code = crashing.popen.wait(timeout=30)
        if code != -9:
            raise ChaosError(f"the coordinator exited with {code}, not SIGKILL\n{crashing.output()[-2000:]}")
        killed = time.monotonic()
        job = c.job(job_id)
        snaps = [s for s in c.table().metadata.snapshots if job_of(s) == job_id]
        if job.state != JobState.COMMITTING or [s.snapshot_id for s in snaps] != [job.snapshot.snapshot_id]:
            raise ChaosError(f"after the crash: job {job.summary()}, snapshots {snaps}")
        lease_ms = int(c.redis_client.pttl(keys.commit_lock(job_id)))
        # When beat runs (the dead committer's commit lease runs out within seconds)
        c.start_beat()
        job = c.wait_job(job_id, timeout=RESUMED_WITHIN - (time.monotonic() - killed))
        res.notes.append(
            f"dead committer's lease had {max(0, lease_ms) / 1000:.1f}s left; "
            f"completed {time.monotonic() - killed:.1f}s after the kill"
        )
        # Then the job is COMPLETED with the snapshot the catalog already holds, and no second one
        c.start_coordinator(name="coordinator-2")
        with c.connected() as client:
            status = client.status(job_id)
            again = client.commit(job_id)
        if (
            job.state != JobState.COMPLETED
            or job.committed_snapshot_id != job.snapshot.snapshot_id
            or status.committed_snapshot_id != job.snapshot.snapshot_id
            or not again.already_committed
        ):
            raise ChaosError(f"job ended {job.summary()}; status {status}; commit again {again}\n{c.logs()}")
        verify(c, res, expected, [job_id])


@case("two_beats", "two `floe beat` at once: auto-commit and watchdog stay exactly-once")
def two_beats(home: Path, res: CaseResult) -> None:
    expected = set(range(60_000))
    with Cluster(home, SMALL_WRITES) as c, observed(c, res, expected):
        make_table(c.catalog, "chaos.events", TABLE_PROPS)
        for j in range(3):
            write_csv(c.data_dir(1) / f"j{j}.csv", j * 20_000, 10_000)  # job j: ids 20,000j ..+20,000
            write_csv(c.data_dir(2) / f"j{j}.csv", j * 20_000 + 10_000, 10_000)
        write_csv(c.data_dir(1) / "stall.csv", 900_000, 1_000)
        c.start_coordinator()
        beats = [c.start_beat("beat-1"), c.start_beat("beat-2")]
        c.start_workers([1, 2])
        jobs = [
            start_job(c, res, [TaskArg(f"j{j}a", "1", [f"j{j}.csv"]), TaskArg(f"j{j}b", "2", [f"j{j}.csv"])])
            for j in range(3)
        ]
        # host 9 has no worker: this job stalls after host 1's manifest and must be failed ONCE
        stalled = start_job(
            c, res, [TaskArg("s1", "1", ["stall.csv"]), TaskArg("s9", "9", ["x.csv"])], timeout_seconds=3
        )
        for job_id in jobs:
            c.wait_job(job_id)
        failed = c.wait_job(stalled, timeout=60)
        if "timed out" not in failed.failure_reason:
            raise ChaosError(f"stalled job ended {failed.summary()}")
        # both beats really ran: each sent watchdog and auto-commit ticks
        for beat in beats:

            def ticking(b: Proc = beat) -> bool:
                return b.output().count("floe.watchdog") >= 2 and b.output().count("floe.autocommit") >= 2

            wait_until(ticking, 30, f"{beat.name} sending ticks")
        want = {
            "jobs_completed_total": 3,
            "jobs_failed_total": 1,
            "watchdog_failed_jobs_total": 1,
            "commit_seconds_count": 3,
        }

        def wrong() -> dict[str, float]:
            counters = c.store.counters()
            return {k: counters.get(k, 0) for k, v in want.items() if counters.get(k, 0) != v}

        # (the watchdog bumps its counter after it has deleted the failed job's files: wait for it)
        try:
            wait_until(lambda: not wrong(), 10, "the cluster-wide counters")
        except ChaosError:
            raise ChaosError(f"counters {wrong()}, expected {want}") from None
        verify(c, res, expected, jobs, [stalled])


@case("link_cut_restored", "a host's link cut mid-task (cable pulled), restored: the job completes")
def link_cut_restored(home: Path, res: CaseResult) -> None:
    expected = set(range(BIG + 50_000))
    with Cluster(home, SMALL_WRITES) as c, observed(c, res, expected):
        table = make_table(c.catalog, "chaos.events", TABLE_PROPS)
        write_csv(c.data_dir(1) / "big.csv", 0, BIG)
        write_csv(c.data_dir(2) / "small.csv", BIG, 50_000)
        c.start_coordinator()
        c.start_workers([1, 2])
        job_id = start_job(c, res, [TaskArg("t1", "1", ["big.csv"]), TaskArg("t2", "2", ["small.csv"])])
        # Given host 1's link goes down while its task runs
        wait_mid_task(c, table, job_id, "t1")
        c.cut(1)
        cut_at = time.time()
        # (host 2 carries on; host 1 can no longer report: its progress goes stale)
        wait_until(lambda: manifest_recorded(c, job_id, "t2"), 60, "host 2's manifest")
        wait_until(lambda: time.time() - c.job(job_id).last_progress_at > 4, 60, "host 1 to fall silent")
        if manifest_recorded(c, job_id, "t1"):
            raise ChaosError("host 1 recorded its manifest through a cut link")
        # When the link comes back
        c.restore(1)
        restored_at = time.time()
        job = c.wait_job(job_id, timeout=180)
        res.notes.append(
            f"cut {restored_at - cut_at:.1f}s; completed {time.time() - restored_at:.1f}s after restore"
        )
        # Then the job completes, every row once
        if job.state != JobState.COMPLETED:
            raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
        verify(c, res, expected, [job_id])


@case(
    "link_cut_for_good",
    "a host cut for good: the watchdog fails the job and deletes its files; the user's retry succeeds "
    "once the link is back",
)
def link_cut_for_good(home: Path, res: CaseResult) -> None:
    expected = set(range(50_000 + BIG))
    with Cluster(home, SMALL_WRITES) as c, observed(c, res, expected):
        table = make_table(c.catalog, "chaos.events", TABLE_PROPS)
        write_csv(c.data_dir(1) / "small.csv", 0, 50_000)
        write_csv(c.data_dir(2) / "big.csv", 50_000, BIG)
        c.start_coordinator()
        c.start_beat()
        c.start_workers([1, 2])
        tasks = [TaskArg("t1", "1", ["small.csv"]), TaskArg("t2", "2", ["big.csv"])]
        first = start_job(c, res, tasks, timeout_seconds=4)
        # Given host 2 is cut off while converting, and stays cut
        wait_mid_task(c, table, first, "t2")
        c.cut(2)
        wait_until(lambda: manifest_recorded(c, first, "t1"), 60, "host 1's manifest")
        host1_files = task_files(table, "t1")
        # When the job's timeout passes, the watchdog fails it and deletes the files it knows of
        job = c.wait_job(first, timeout=60)
        if job.state != JobState.FAILED or "timed out" not in job.failure_reason:
            raise ChaosError(f"first job ended {job.summary()}")
        # (it deletes them right after the FAILED transition: wait for that, briefly)
        try:
            wait_until(lambda: not any(file_exists(table, p) for p in host1_files), 10, "host 1's files to go")
        except ChaosError:
            still = [p for p in host1_files if file_exists(table, p)]
            raise ChaosError(f"the watchdog left host 1's files of the failed job: {still[:3]}") from None
        # and the user retries (a new StartJob) while host 2 is still unreachable
        retry = start_job(c, res, tasks, timeout_seconds=300)
        wait_until(lambda: manifest_recorded(c, retry, "t1"), 60, "host 1's manifest of the retry")
        # Then once the link is back the retry completes, once, and host 2's abandoned attempt cleans up
        c.restore(2)
        job = c.wait_job(retry, timeout=180)
        if job.state != JobState.COMPLETED:
            raise ChaosError(f"retry ended {job.summary()}\n{c.logs()}")
        verify(c, res, expected, [retry], [first], settle=60)


@case(
    "redis_sigkill",
    "Redis SIGKILLed and restarted mid-job (AOF, appendfsync everysec): nothing acknowledged is lost",
)
def redis_sigkill(home: Path, res: CaseResult) -> None:
    expected = set(range(BIG + 50_000))
    with Cluster(home, SMALL_WRITES) as c, observed(c, res, expected):
        assert c.redis is not None
        table = make_table(c.catalog, "chaos.events", TABLE_PROPS)
        write_csv(c.data_dir(1) / "big.csv", 0, BIG)
        write_csv(c.data_dir(2) / "small.csv", BIG, 50_000)
        c.start_coordinator()
        c.start_beat()
        c.start_workers([1, 2])
        job_id = start_job(c, res, [TaskArg("t1", "1", ["big.csv"]), TaskArg("t2", "2", ["small.csv"])])
        wait_until(lambda: manifest_recorded(c, job_id, "t2"), 60, "host 2's manifest")
        wait_mid_task(c, table, job_id, "t1")
        # Given writes acknowledged right up to the crash
        acked = c.redis_client.hgetall(keys.job_manifests(job_id))
        counter = redis.Redis.from_url(c.redis_url)
        last_acked = 0
        until = time.monotonic() + 0.3
        while time.monotonic() < until:
            last_acked = int(counter.incr("chaos:acked"))
        counter.close()
        # When Redis is SIGKILLed mid-job, stays down longer than a task's progress interval (so the
        # running task and every worker meet the outage) and restarts on the same port and data
        c.redis.kill()
        time.sleep(REDIS_DOWN_SECONDS)
        c.redis.restart()
        # Then everything acknowledged is still there, and the job completes exactly once
        survived = int(c.redis_client.get("chaos:acked") or 0)
        if survived < last_acked:
            raise ChaosError(f"acknowledged INCR {last_acked} lost: Redis came back with {survived}")
        after = c.redis_client.hgetall(keys.job_manifests(job_id))
        lost = {k for k, v in acked.items() if after.get(k) != v}
        if lost:
            raise ChaosError(f"acknowledged manifests lost by the restart: {sorted(lost)}")
        restarted = time.time()
        try:
            job = c.wait_job(job_id, timeout=REDIS_RECOVERY_SECONDS)
        except ChaosError as exc:
            stuck = c.job(job_id)
            raise ChaosError(
                f"job still {stuck.state.value} ({stuck.manifests_accepted}/{stuck.expected} manifests) "
                f"{REDIS_RECOVERY_SECONDS}s after Redis came back: {_stuck_deliveries(c)}\n{exc}"
            ) from None
        res.notes.append(f"completed {time.time() - restarted:.1f}s after the restart")
        if job.state != JobState.COMPLETED:
            raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
        verify(c, res, expected, [job_id])


def _stuck_deliveries(c: Cluster) -> str:
    """Why a job stalls after a broker outage: tasks parked in kombu's ``unacked`` hash."""
    import base64
    import json

    parked = []
    for tag, raw in c.redis_client.hgetall("unacked").items():
        with contextlib.suppress(Exception):
            message = json.loads(raw)[0]
            args = json.loads(base64.b64decode(message["body"]))[0]
            parked.append(f"{message['headers']['task']}{args} (delivery {tag})")
    rejected = []
    for proc in c.procs:
        for line in proc.output().splitlines():
            if "reject requeue=False" in line:
                with contextlib.suppress(ValueError, KeyError):
                    line = f"{proc.name}: {json.loads(line)['msg']}"
                rejected.append(line[:300])
    return (
        f"{len(parked)} task message(s) parked in kombu's `unacked` hash until the visibility timeout "
        f"({c.base_env().get('FLOE_VISIBILITY_TIMEOUT_SECONDS', '3600')}s): {parked}; "
        f"worker log: {rejected}"
    )


@case("concurrent_writer", "another writer commits table.append() in a loop while a job runs")
def concurrent_writer(home: Path, res: CaseResult) -> None:
    expected = set(range(200_000))  # plus every id the other writer committed
    with Cluster(home, SMALL_WRITES) as c, observed(c, res, expected):
        make_table(c.catalog, "chaos.events", TABLE_PROPS)
        write_csv(c.data_dir(1) / "a.csv", 0, 100_000)
        write_csv(c.data_dir(2) / "b.csv", 100_000, 100_000)
        c.start_coordinator()
        c.start_workers([1, 2])
        writer = AppendLoop(c.new_catalog(), 10_000_000, 200)
        writer.start()
        try:
            wait_until(lambda: writer.progressed(2), 60, "the other writer's first commits")
            job_id = start_job(c, res, [TaskArg("t1", "1", ["a.csv"]), TaskArg("t2", "2", ["b.csv"])])
            job = c.wait_job(job_id)
            after = writer.committed
            wait_until(lambda: writer.progressed(after + 2), 60, "the other writer to go on after the job")
        finally:
            writer.stop()
        if writer.error:
            raise ChaosError(f"the other writer failed: {writer.error}")
        if job.state != JobState.COMPLETED:
            raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
        retries = c.store.counters().get("commit_conflict_retries_total", 0)
        committed = c.table().metadata.snapshot_by_id(job.committed_snapshot_id or 0)
        rebased = committed is not None and committed.parent_snapshot_id != job.snapshot.parent_snapshot_id
        res.notes.append(
            f"other writer committed {writer.committed} appends; Floe's commit "
            f"{'rebased onto a newer head' if rebased else 'did not need to rebase'}, "
            f"{retries:.0f} conflict retries"
        )
        verify(c, res, expected | writer.ids, [job_id], other_snapshots=writer.committed)


class AppendLoop(threading.Thread):
    """A plain pyiceberg writer appending batches of new ids to the same table until stopped."""

    def __init__(self, catalog: Catalog, first_id: int, batch: int) -> None:
        super().__init__(daemon=True, name="append-loop")
        self.catalog = catalog
        self.next_id, self.batch = first_id, batch
        self.ids: set[int] = set()
        self.committed = 0
        self.error = ""
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                table = self.catalog.load_table("chaos.events")
                table.append(
                    arrow_rows(self.next_id, self.batch).cast(ARROW_SCHEMA)
                )  # pyiceberg retries its own conflicts
                self.ids.update(range(self.next_id, self.next_id + self.batch))
                self.next_id += self.batch
                self.committed += 1
        except Exception as exc:  # noqa: BLE001 - reported by the case
            self.error = f"{type(exc).__name__}: {exc}"

    def progressed(self, at_least: int) -> bool:
        if self.error:
            raise ChaosError(f"the other writer failed: {self.error}")
        return self.committed >= at_least

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)
        if isinstance(self.catalog, SqlCatalog):
            self.catalog.engine.dispose()


@case(
    "corrupt_source",
    "a truncated gzip CSV and a corrupt Parquet file: job FAILED naming the file, nothing left",
)
def corrupt_source(home: Path, res: CaseResult) -> None:
    with Cluster(home, SMALL_WRITES) as c, observed(c, res, set()):
        table = make_table(c.catalog, "chaos.events", TABLE_PROPS)
        write_csv(c.data_dir(1) / "good.csv", 0, 50_000)
        write_csv(
            c.data_dir(2) / "first.csv", 50_000, 300_000
        )  # converted (files written) before the bad one
        truncate_file(write_csv(c.data_dir(2) / "bad.csv.gz", 350_000, 100_000))
        c.data_dir(1).joinpath("broken.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 64)
        c.start_coordinator()
        c.start_workers([1, 2])
        truncated = start_job(
            c, res, [TaskArg("t1", "1", ["good.csv"]), TaskArg("t2", "2", ["first.csv", "bad.csv.gz"])]
        )
        corrupt = start_job(c, res, [TaskArg("p1", "1", ["broken.parquet"])])
        for job_id, task_id, name in ((truncated, "t2", "bad.csv.gz"), (corrupt, "p1", "broken.parquet")):
            job = c.wait_job(job_id)
            # the task failed permanently (no retries) and the job says which file
            if (
                job.state != JobState.FAILED
                or f"task {task_id} failed" not in job.failure_reason
                or name not in job.failure_reason
                or "gave up after" in job.failure_reason
            ):
                raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
            res.notes.append(f"{name}: {job.failure_reason[:160]}")
        verify(c, res, set(), [], [truncated, corrupt], settle=30)
        if task_files(table, "t2") or task_files(table, "t1"):
            raise ChaosError("data files of the failed job remain")


# The catalog and object-store cases live in their own module; importing it registers them here.
from chaos import cases_catalog  # noqa: E402,F401
