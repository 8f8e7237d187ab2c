"""The fault matrix's outage cases (registered into :data:`chaos.cases.CASES`): a host's link, the broker.

A host's link cut mid-task then restored; a host cut for good (the watchdog fails the job, the
user's retry succeeds once the link is back); Redis SIGKILLed and restarted mid-job.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import redis

from app import keys
from app.client import TaskArg
from app.jobs.model import JobState
from chaos.cases import (
    BIG,
    SMALL_WRITES,
    TABLE_PROPS,
    CaseResult,
    case,
    manifest_recorded,
    observed,
    start_job,
    task_files,
    verify,
    wait_mid_task,
)
from chaos.data import file_exists, make_table, write_csv
from chaos.harness import ChaosError, Cluster, wait_until

REDIS_DOWN_SECONDS = 3.0
REDIS_RECOVERY_SECONDS = 60  # the job needs ~3 s once Redis is back; 60 s is ample


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
