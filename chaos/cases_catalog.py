"""The fault matrix's catalog and object-store cases (registered into :data:`chaos.cases.CASES`).

On the s3-rest topology: the object store SIGKILLed mid-task and restarted; the REST catalog
unreachable during the commit; the catalog's answer to the commit lost after it landed; the committer
SIGKILLed while its commit request is on its way. On a PostgreSQL catalog: PostgreSQL restarted mid-job.
The catalog faults go through :class:`chaos.proxies.CatalogProxy`, which every Floe process of the
cluster uses as its REST catalog; the case itself reads the catalog directly.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

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
    verify,
    wait_mid_task,
)
from chaos.data import make_table, write_csv
from chaos.harness import ChaosError, Cluster, wait_until
from chaos.proxies import CatalogProxy
from chaos.topology import restart_postgres

OBJECT_STORE_DOWN_SECONDS = 3.0
CATALOG_DOWN_SECONDS = 8.0  # several auto-commit ticks (every second here) meet the outage
COMMIT = ("POST", "/tables/events")  # the REST catalog's commit of chaos.events


def _two_host_job(c: Cluster, res: CaseResult, rows_1: int, rows_2: int, **kwargs: object) -> tuple[str, set[int]]:
    write_csv(c.data_dir(1) / "a.csv", 0, rows_1)
    write_csv(c.data_dir(2) / "b.csv", rows_1, rows_2)
    job_id = start_job(c, res, [TaskArg("t1", "1", ["a.csv"]), TaskArg("t2", "2", ["b.csv"])], **kwargs)
    return job_id, set(range(rows_1 + rows_2))


def _job_snapshots(c: Cluster, job_id: str) -> list[int]:
    return [s.snapshot_id for s in c.table().metadata.snapshots if job_of(s) == job_id]


@contextlib.contextmanager
def _commit_meets(
    home: Path, res: CaseResult, fault: Callable[[CatalogProxy, str, str], threading.Event], reached: str
) -> Iterator[tuple[Cluster, str, set[int]]]:
    """A cluster behind the catalog proxy, with ``fault`` armed on the table's commit, running a two-host
    job: yields (cluster, job id, expected ids) once the job's commit has met the fault (``reached``)."""
    with Cluster(home, SMALL_WRITES, catalog_proxy=True) as c:
        make_table(c.catalog, "chaos.events", TABLE_PROPS)
        met = fault(c.proxy, *COMMIT)
        c.start_coordinator()
        c.start_beat()
        c.start_workers([1, 2])
        job_id, expected = _two_host_job(c, res, 50_000, 50_000)
        with observed(c, res, expected):
            wait_until(met.is_set, 60, reached)
            yield c, job_id, expected


@case(
    "objectstore_sigkill",
    "the object store (SeaweedFS: S3 and the REST catalog) SIGKILLed mid-task, restarted 3 s later",
    topologies=("s3-rest",),
)
def objectstore_sigkill(home: Path, res: CaseResult) -> None:
    with Cluster(home, SMALL_WRITES) as c:
        server = c.backend.server  # type: ignore[attr-defined]
        table = make_table(c.catalog, "chaos.events", TABLE_PROPS)
        c.start_coordinator()
        c.start_beat()
        c.start_workers([1, 2])
        job_id, expected = _two_host_job(c, res, BIG, 50_000)
        with observed(c, res, expected):
            # Given host 1's task is writing its data files to S3
            wait_mid_task(c, table, job_id, "t1")
            # When the object store (and its catalog) is SIGKILLed, stays down, and restarts on its data
            server.kill()
            time.sleep(OBJECT_STORE_DOWN_SECONDS)
            server.start()
            restarted = time.time()
            job = c.wait_job(job_id, timeout=180)
            res.notes.append(f"completed {time.time() - restarted:.1f}s after the restart")
            # Then the job completes, every row once, and the killed writes left nothing behind
            if job.state != JobState.COMPLETED:
                raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
            verify(c, res, expected, [job_id], settle=30)


@case(
    "catalog_down_at_commit",
    "the REST catalog becomes unreachable as the commit is sent: the job stays COMMITTING, then "
    "completes once it is back",
    topologies=("s3-rest",),
)
def catalog_down_at_commit(home: Path, res: CaseResult) -> None:
    # Given the catalog goes unreachable (connections refused) the moment the commit reaches it
    reached = "the commit to reach the catalog"
    with _commit_meets(home, res, CatalogProxy.go_down_on, reached) as (c, job_id, expected):
        down_at = time.monotonic()
        # Then while it is down the job stays COMMITTING, with nothing on the table, through many
        # auto-commit ticks (each fails to reach the catalog and deletes nothing)
        while time.monotonic() - down_at < CATALOG_DOWN_SECONDS:
            job = c.job(job_id)
            if job.state != JobState.COMMITTING or _job_snapshots(c, job_id):
                raise ChaosError(f"while the catalog was down: job {job.summary()}\n{c.logs()}")
            time.sleep(0.5)
        # When it is back, the job completes once
        c.proxy.up()
        job = c.wait_job(job_id, timeout=60)
        if job.state != JobState.COMPLETED:
            raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
        commits = c.proxy.matching(*COMMIT)
        landed = [e for e in commits if e.status == 200]
        res.notes.append(
            f"commit requests: {[e.disposition for e in commits]}; completed "
            f"{time.monotonic() - down_at - CATALOG_DOWN_SECONDS:.1f}s after the catalog came back"
        )
        if len(landed) != 1 or commits[0].disposition != "dropped":
            raise ChaosError(f"expected the dropped commit then one that landed: {commits}")
        verify(c, res, expected, [job_id])


@case(
    "catalog_answer_lost",
    "the REST catalog's answer to the commit is lost after it landed: found among main's ancestors, "
    "no second commit",
    topologies=("s3-rest",),
)
def catalog_answer_lost(home: Path, res: CaseResult) -> None:
    # Given the catalog's answer to the commit never reaches the committer (the connection drops)
    reached = "the commit to land unanswered"
    with _commit_meets(home, res, CatalogProxy.lose_answer_of, reached) as (c, job_id, expected):
        job = c.wait_job(job_id, timeout=60)
        # Then the committer found its snapshot among main's ancestors: one commit request, one snapshot
        if job.state != JobState.COMPLETED:
            raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
        commits = c.proxy.matching(*COMMIT)
        res.notes.append(f"commit requests: {[(e.disposition, e.status) for e in commits]}")
        if [(e.disposition, e.status) for e in commits] != [("answer-lost", 200)]:
            raise ChaosError(f"expected exactly one commit request, landed, answer lost: {commits}")
        verify(c, res, expected, [job_id])


@case(
    "commit_in_flight_sigkill",
    "the committer SIGKILLed after sending its commit, before the catalog received it; the request "
    "arrives late, after beat resumed the job",
    topologies=("s3-rest",),
)
def commit_in_flight_sigkill(home: Path, res: CaseResult) -> None:
    with Cluster(home, SMALL_WRITES, catalog_proxy=True) as c:
        make_table(c.catalog, "chaos.events", TABLE_PROPS)
        proxy = c.proxy
        coordinator = c.start_coordinator()
        c.start_beat()
        c.start_workers([1, 2])
        job_id, expected = _two_host_job(c, res, 50_000, 50_000, auto_commit=False)
        with observed(c, res, expected):
            wait_until(lambda: c.job(job_id).ready_to_commit, 60, "ready_to_commit")
            # Given the coordinator's commit request is on its way and has not reached the catalog
            held = proxy.hold(*COMMIT)
            answered: list[object] = []

            def commit_job() -> None:
                try:
                    with c.connected() as client:
                        answered.append(client.commit(job_id))
                except grpc.RpcError as exc:
                    answered.append(exc.code())

            caller = threading.Thread(target=commit_job, daemon=True)
            caller.start()
            wait_until(held.is_set, 60, "the commit request to be held on its way")
            if c.job(job_id).state != JobState.COMMITTING:
                raise ChaosError(f"job is {c.job(job_id).summary()} while its commit is in flight")
            # When the committer is SIGKILLed meanwhile
            coordinator.kill()
            killed = time.monotonic()
            caller.join(timeout=30)
            # Then beat resumes the job once the dead committer's lease runs out: one snapshot
            job = c.wait_job(job_id, timeout=RESUMED_WITHIN)
            res.notes.append(f"completed {time.monotonic() - killed:.1f}s after the kill")
            if job.state != JobState.COMPLETED:
                raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
            # and the dead committer's request, arriving now, is refused by the catalog (main moved on)
            proxy.release(forward=True)
            wait_until(proxy.held_done.is_set, 60, "the late commit request to reach the catalog")
            late = [e for e in proxy.matching(*COMMIT) if e.disposition == "held"]
            res.notes.append(f"the late request got HTTP {late[0].status if late else None}")
            if answered != [grpc.StatusCode.UNAVAILABLE]:
                raise ChaosError(f"the dead coordinator's client got {answered}, not UNAVAILABLE")
            if not late or late[0].status == 200:
                raise ChaosError(f"the late commit request was accepted: {late}")
            verify(c, res, expected, [job_id])


@case(
    "postgres_restart",
    "PostgreSQL (the SQL catalog's database) restarted mid-job: the job completes, every row once",
    topologies=("file-sql",),
)
def postgres_restart(home: Path, res: CaseResult) -> None:
    with Cluster(home, SMALL_WRITES, backend="postgres") as c:
        table = make_table(c.catalog, "chaos.events", TABLE_PROPS)
        c.start_coordinator()
        c.start_beat()
        c.start_workers([1, 2])
        job_id, expected = _two_host_job(c, res, BIG, 50_000)
        with observed(c, res, expected):
            wait_until(lambda: manifest_recorded(c, job_id, "t2"), 60, "host 2's manifest")
            # Given every process holds catalog connections to PostgreSQL, and host 1's task runs
            wait_mid_task(c, table, job_id, "t1")
            # When PostgreSQL restarts (every connection is dropped)
            started = time.monotonic()
            restart_postgres()
            res.notes.append(f"restart took {time.monotonic() - started:.1f}s")
            # Then the job completes (its commit meets the dropped connections), every row once, and no
            # process met the restart as an error it did not expect (a dead pooled connection)
            job = c.wait_job(job_id, timeout=120)
            if job.state != JobState.COMPLETED:
                raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
            unexpected = [
                f"{p.name}: {line[:300]}" for p in c.procs for line in p.output().splitlines() if "raised unexpected" in line
            ]
            if unexpected:
                raise ChaosError(f"errors nobody handled: {unexpected}")
            verify(c, res, expected, [job_id])
