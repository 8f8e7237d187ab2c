"""The commit lease: a committer that dies anywhere inside a commit leaves its job to be resumed within
30 s — by beat's auto-committer or by a client's CommitJob retry — and committed exactly once; a
committer that lost its lease neither completes the job nor deletes anything.

The dead committer is ``python -m chaos.crashing_coordinator --die-at PHASE``: the real ``floe
coordinator`` that SIGKILLs itself at one step of the commit path (before the catalog call, inside
the catalog's commit transaction, after the catalog accepted the snapshot).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import grpc
import pytest

from app.client import TaskArg
from app.jobs.model import JobState
from app.jobs.store import JobStore
from app.proto_gen.api import common_pb2, coordinator_pb2
from tests.support.api_server import Api, call_fails
from tests.support.system import Cluster, wait_until
from tests.support.tables import make_table, read_ids, rows, write_csv

pytestmark = pytest.mark.integration

PHASES = ("before-catalog", "in-catalog", "after-catalog")
RESUMED_WITHIN = 30.0  # seconds from the committer's death to the job COMPLETED
TASKS = 3
ROWS_PER_TASK = 50


def _job_snapshots(table: object, job_id: str) -> list[int]:
    snapshots = table.metadata.snapshots  # type: ignore[attr-defined]
    return [s.snapshot_id for s in snapshots if s.summary is not None and s.summary.get("floe.job-id") == job_id]


def _report_every_manifest(cluster: Cluster, store: JobStore, tmp_path: Path) -> str:
    """A job of three tasks on host 9 (no worker there: its ingest messages wait in host-9's queue),
    not auto-committed; the test writes each task's manifest and reports it, as a worker outside
    Celery would. -> the job id, ready to commit."""
    from workers.conversion import write_task_manifest

    table = make_table(cluster.catalog, "demo.events")
    tasks = [TaskArg(f"t{i}", "9", [f"t{i}.csv"]) for i in range(TASKS)]
    with cluster.client() as client:
        job_id = str(client.start_job("demo", "events", requester="t", tasks=tasks, auto_commit=False).job_id)
        snapshot = store.require(job_id).snapshot
        for i in range(TASKS):
            source = write_csv(tmp_path / "sources" / f"t{i}.csv", rows(i * ROWS_PER_TASK, ROWS_PER_TASK))
            manifest = write_task_manifest(snapshot, table, [source], f"t{i}")
            assert manifest is not None
            info = common_pb2.ManifestInfo(task_id=manifest.task_id, descriptor_json=manifest.to_json())
            client.stub.ReportManifest(coordinator_pb2.ReportManifestRequest(job_id=job_id, manifest=info))
    assert store.require(job_id).ready_to_commit
    return job_id


def _commit_until_it_answers(cluster: Cluster, job_id: str, deadline: float) -> coordinator_pb2.CommitJobResponse:
    """What a client does: retry CommitJob while it answers ABORTED (a commit in progress: the dead
    committer's lease has not run out yet) or UNAVAILABLE."""
    with cluster.client() as client:
        while True:
            try:
                return client.commit(job_id)
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE):
                    raise
                if time.monotonic() > deadline:
                    raise AssertionError(f"CommitJob still answers {exc.code()}: {exc.details()}") from None
            time.sleep(0.5)


@pytest.mark.parametrize("resumer", ["beat", "client"])
@pytest.mark.parametrize("phase", PHASES)
def test_a_committer_killed_anywhere_in_a_commit_is_resumed_within_30s_exactly_once(
    cluster: Cluster, tmp_path: Path, phase: str, resumer: str
) -> None:
    store = JobStore.from_url(cluster.redis_url, 3600)
    try:
        crashing = cluster.start_coordinator(
            "coordinator-crashing", [sys.executable, "-m", "chaos.crashing_coordinator", "--die-at", phase]
        )
        job_id = _report_every_manifest(cluster, store, tmp_path)
        reserved = store.require(job_id).snapshot.snapshot_id
        if resumer == "beat":
            cluster.start_worker("ctl")  # beat's ticks run on the control queue, which every worker serves
            cluster.start_beat()
        # Given the committer is SIGKILLed at `phase` of CommitJob, holding the job's commit lease
        with cluster.client() as client, pytest.raises(grpc.RpcError) as info:
            client.commit(job_id)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert crashing.popen is not None and crashing.popen.wait(timeout=30) == -signal.SIGKILL
        killed = time.monotonic()
        landed = _job_snapshots(cluster.catalog.load_table("demo.events"), job_id)
        assert landed == ([reserved] if phase == "after-catalog" else []), (phase, landed)
        assert store.require(job_id).state in (JobState.COMMITTING, JobState.COMPLETED)
        # When beat's auto-committer, or a client retrying CommitJob on a new coordinator, resumes it
        if resumer == "client":
            cluster.start_coordinator()
            reply = _commit_until_it_answers(cluster, job_id, killed + RESUMED_WITHIN)
            assert reply.snapshot_id == reserved
        job = wait_until(
            lambda: (j := store.require(job_id)).state == JobState.COMPLETED and j,
            max(0.1, killed + RESUMED_WITHIN - time.monotonic()),
            f"job {job_id} to be completed within {RESUMED_WITHIN:.0f}s of its committer's death",
        )
        # Then it is COMPLETED with the reserved snapshot, which the table holds once, every row once
        assert job.committed_snapshot_id == reserved  # type: ignore[attr-defined]
        table = cluster.catalog.load_table("demo.events")
        assert _job_snapshots(table, job_id) == [reserved]
        assert len(table.metadata.snapshots) == 1
        assert read_ids(table) == list(range(TASKS * ROWS_PER_TASK))
        if resumer == "beat":
            cluster.start_coordinator()
        with cluster.client() as client:
            again = client.commit(job_id)
        assert again.already_committed and again.snapshot_id == reserved
    finally:
        store.close()


def test_a_committer_that_lost_its_lease_neither_completes_the_job_nor_deletes(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The commit lands, but meanwhile the committer's lease ran out (it stalled longer than the lease)
    # and another committer took the job: the stale one must leave the job and the files to it.
    from app.jobs import cleanup as cleanup_module
    from app.jobs import committer as committer_module
    from app.keys import commit_lock
    from tests.support.api_server import start_request
    from workers.conversion import write_task_manifest

    merging = {"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "2"}
    table = make_table(api.catalog, "demo.events", properties=merging)
    tasks = [{"task_id": f"t{i}", "host": "1"} for i in range(3)]
    job_id = api.coordinator.StartJob(start_request(tasks=tasks, auto_commit=False)).job_id
    store = api.service.store
    snapshot = store.require(job_id).snapshot
    paths = []
    for i in range(3):
        source = write_csv(tmp_path / f"s{i}.csv", rows(i * 10, 10))
        m = write_task_manifest(snapshot, table, [source], f"t{i}")
        assert m is not None
        paths.append(m.manifest_path)
        info = common_pb2.ManifestInfo(task_id=m.task_id, descriptor_json=m.to_json())
        api.coordinator.ReportManifest(coordinator_pb2.ReportManifestRequest(job_id=job_id, manifest=info))
    real_commit = committer_module.commit_distributed_snapshot
    taken: list[str] = []

    def commit_while_the_lease_runs_out(*args: object, **kwargs: object) -> object:
        outcome = real_commit(*args, **kwargs)  # type: ignore[arg-type]
        api.redis.delete(commit_lock(job_id))  # the lease ran out while the committer stalled...
        token = store.acquire_commit_lock(job_id, ttl_ms=60_000)  # ...and another committer took it
        assert token is not None
        taken.append(token)
        return outcome

    deletes: list[list[str]] = []
    real_delete = cleanup_module.delete_quietly

    def recording_delete(io: object, targets: object) -> None:
        deletes.append(list(targets))  # type: ignore[call-overload]
        real_delete(io, deletes[-1])  # type: ignore[arg-type]

    monkeypatch.setattr(committer_module, "commit_distributed_snapshot", commit_while_the_lease_runs_out)
    monkeypatch.setattr(cleanup_module, "delete_quietly", recording_delete)
    # When the stale committer comes back from its (landed) catalog call
    call_fails(
        api.coordinator.CommitJob,
        coordinator_pb2.CommitJobRequest(job_id=job_id),
        grpc.StatusCode.ABORTED,
        r"lease of job \w+ ran out; another committer resumes it",
    )
    # Then it neither completed the job nor deleted anything (the merged-away manifests are still there)
    assert store.require(job_id).state == JobState.COMMITTING
    assert deletes == [] and all(Path(p.removeprefix("file://")).exists() for p in paths)
    assert _job_snapshots(api.catalog.load_table("demo.events"), job_id) == [snapshot.snapshot_id]
    # and the job is the new lease holder's: while it holds it, beat completes the job from the table
    assert api.redis.get(commit_lock(job_id)) == taken[0]
    monkeypatch.setattr(committer_module, "commit_distributed_snapshot", real_commit)
    api.service.autocommit_tick()
    done = store.require(job_id)
    assert done.state == JobState.COMPLETED and done.committed_snapshot_id == snapshot.snapshot_id
    assert not any(Path(p.removeprefix("file://")).exists() for p in paths)  # merged away, then deleted
    table = api.catalog.load_table("demo.events")
    assert _job_snapshots(table, job_id) == [snapshot.snapshot_id] and len(table.metadata.snapshots) == 1
    assert read_ids(table) == list(range(30))
