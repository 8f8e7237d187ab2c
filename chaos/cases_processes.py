"""The fault matrix's process cases (registered into :data:`chaos.cases.CASES`): Floe's own processes.

Three hosts with nothing going wrong (the baseline); a host's worker SIGKILLed mid-task; the
coordinator SIGKILLed mid-job, and inside CommitJob after the catalog accepted the snapshot; two
beats at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from app import keys
from app.client import TaskArg
from app.jobs.model import JobState
from chaos.cases import (
    BIG,
    RESUMED_WITHIN,
    SMALL_WRITES,
    TABLE_PROPS,
    CaseResult,
    case,
    job_of,
    manifest_recorded,
    observed,
    start_job,
    task_files,
    verify,
    wait_mid_task,
)
from chaos.data import make_table, write_csv
from chaos.harness import ChaosError, Cluster, Proc, wait_until

VISIBILITY_TIMEOUT = 4


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
