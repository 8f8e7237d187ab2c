"""The running system end to end: real redis-server, real `celery worker` processes, real gRPC servers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest
import redis
from pyiceberg.catalog.rest import RestCatalog

from app import keys
from app.client import TaskArg
from app.proto_gen.api import common_pb2, coordinator_pb2, worker_pb2, worker_pb2_grpc
from tests.support.s3_objects import assert_only_the_snapshot_in_bucket
from tests.support.system import Cluster, wait_until
from tests.support.tables import (
    make_table,
    read_ids,
    rows,
    write_big_csv,
    write_csv,
    write_jsonl,
    write_parquet,
)

pytestmark = pytest.mark.integration


def data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet")) if root.exists() else []


def test_two_hosts_one_job_auto_commits_every_row_once(
    topology_cluster: Cluster, request: pytest.FixtureRequest
) -> None:
    cluster = topology_cluster  # SQLite + file://, and SeaweedFS's REST catalog + S3
    # Given a partitioned table and sources in three formats on two hosts
    table = make_table(cluster.catalog, "demo.events", partitioned=True)
    write_csv(cluster.data_dir("1") / "a.csv", rows(0, 400))
    write_jsonl(cluster.data_dir("1") / "b.jsonl", rows(400, 100))
    write_parquet(cluster.data_dir("2") / "c.parquet", rows(500, 300))
    write_csv(cluster.data_dir("2") / "more" / "d.csv", rows(800, 200))
    cluster.start_coordinator()
    cluster.start_worker("1")
    cluster.start_worker("2")
    # When one job runs tasks on both hosts
    with cluster.client() as client:
        reply = client.start_job(
            "demo",
            "events",
            requester="test",
            tasks=[
                TaskArg("t1", "1", ["*.csv"]),
                TaskArg("t2", "1", ["*.jsonl"]),
                TaskArg("t3", "2", ["c.parquet"]),
                TaskArg("t4", "2", ["more"]),
            ],
        )
    assert reply.created and reply.snapshot.snapshot_id
    status = cluster.wait_for_state(reply.job_id)
    # Then it completed by itself: one snapshot, every row once, correct counts
    assert status.state == common_pb2.COMPLETED, (status, cluster.logs())
    assert (
        status.manifests_accepted == status.expected_manifests == status.tasks_total == status.tasks_done == 4
    )
    assert status.rows_written == 1000 and status.tasks_failed == 0 and not status.ready_to_commit
    table = cluster.catalog.load_table("demo.events")
    assert read_ids(table) == list(range(1000))
    assert len(table.metadata.snapshots) == 1
    snap = table.metadata.current_snapshot()
    assert snap is not None and snap.snapshot_id == status.committed_snapshot_id == reply.snapshot.snapshot_id
    assert snap.summary is not None and snap.summary["floe.job-id"] == reply.job_id
    assert int(snap.summary["added-data-files"]) == status.files_written
    # the four task manifests were kept in Redis, not written (app/iceberg/inline_manifest.py): one
    # header for the job's one schema, and the job's one manifest is their concatenation
    r = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    descriptors = [json.loads(v) for v in r.hvals(keys.job_manifests(reply.job_id))]
    assert len(descriptors) == 4 and all("inline" in d for d in descriptors)
    assert r.hlen(keys.job_manifest_headers(reply.job_id)) == 1
    r.close()
    (manifest,) = snap.manifests(table.io)
    assert manifest.manifest_path not in {d["manifest_path"] for d in descriptors}
    if isinstance(cluster.catalog, RestCatalog):
        # on S3: metadata, manifests and data files are objects in the bucket, with no orphan data files
        assert_only_the_snapshot_in_bucket(request.getfixturevalue("seaweedfs"), table)
    # and the coordinator's metrics count what happened, cluster-wide
    metrics = cluster.metrics()
    assert metrics["floe_manifests_total"] == 4 and metrics["floe_rows_written_total"] == 1000
    assert metrics["floe_tasks_done_total"] == 4 and metrics["floe_tasks_failed_total"] == 0
    assert metrics["floe_jobs_completed_total"] == 1 and metrics["floe_commit_seconds_count"] == 1
    assert metrics['floe_jobs{state="RUNNING"}'] == 0


def test_walkthrough_step_by_step(cluster: Cluster) -> None:
    make_table(cluster.catalog, "demo.events")
    write_csv(cluster.data_dir("worker-1") / "task-1" / "part.csv", rows(0, 50))
    write_csv(cluster.data_dir("worker-1") / "task-2" / "part.csv", rows(50, 70))
    cluster.start_coordinator()
    _, worker_target = cluster.start_facade_worker("worker-1")
    table_ref = {"catalog": "default", "namespace": "demo", "table": "events"}
    with cluster.client() as client, grpc.insecure_channel(worker_target) as channel:
        # 1. StartJob with the walkthrough's payload as it stands
        start = client.stub.StartJob(
            _parse(
                coordinator_pb2.StartJobRequest,
                {"table": table_ref, "requester": "demo-user", "job_timeout_seconds": 600},
            )
        )
        job_id = start.job_id
        # 2. AssignTasks twice with the same tasks: the second is harmless
        worker = worker_pb2_grpc.WorkerStub(channel)
        assign = _parse(
            worker_pb2.AssignTasksRequest,
            {
                "worker_id": "worker-1",
                "job_id": job_id,
                "table": table_ref,
                "snapshot": {
                    "snapshot_id": start.snapshot.snapshot_id,
                    "commit_uuid": start.snapshot.commit_uuid,
                },
                "tasks": [{"task_id": "task-1"}, {"task_id": "task-2"}],
            },
        )
        first = worker.AssignTasks(assign, timeout=30)
        second = worker.AssignTasks(assign, timeout=30)
        assert list(first.accepted_task_ids) == ["task-1", "task-2"]
        assert list(second.accepted_task_ids) == [] and list(second.already_assigned_task_ids) == [
            "task-1",
            "task-2",
        ]
        # 3. GetJobStatus until ready_to_commit
        status = wait_until(lambda: (s := client.status(job_id)).ready_to_commit and s, 60, "ready_to_commit")
        assert (
            status.state == common_pb2.RUNNING and status.manifests_accepted == 2 and not status.auto_commit
        )
        # 4. CommitJob
        committed = client.commit(job_id)
        assert committed.status.state == common_pb2.COMPLETED and not committed.already_committed
        again = client.commit(job_id)
        assert again.already_committed and again.snapshot_id == committed.snapshot_id
        # 5. A late ReportManifest is acknowledged and ignored
        late = client.stub.ReportManifest(
            coordinator_pb2.ReportManifestRequest(
                job_id=job_id,
                worker_id="worker-1",
                manifest=common_pb2.ManifestInfo(
                    task_id="task-1", manifest_path="file:///late/manifest.avro"
                ),
            )
        )
        assert not late.accepted and late.duplicate and "ignored" in late.message
    table = cluster.catalog.load_table("demo.events")
    assert read_ids(table) == list(range(120))
    assert len(table.metadata.snapshots) == 1


def test_watchdog_fails_a_stalled_job_and_deletes_its_files(cluster: Cluster) -> None:
    table = make_table(cluster.catalog, "demo.events")
    write_csv(cluster.data_dir("1") / "a.csv", rows(0, 30))
    cluster.start_coordinator()
    cluster.start_worker("1")
    cluster.start_beat()
    with cluster.client() as client:
        # host 9 has no worker: its task never runs, so the job stalls after host 1's manifest
        reply = client.start_job(
            "demo",
            "events",
            timeout_seconds=3,
            tasks=[TaskArg("t1", "1", ["a.csv"]), TaskArg("t9", "9", ["x.csv"])],
        )
        wait_until(lambda: client.status(reply.job_id).manifests_accepted == 1, 60, "host 1's manifest")
        assert data_files(Path(table.location().removeprefix("file://")))
    status = cluster.wait_for_state(reply.job_id, timeout=60)
    assert status.state == common_pb2.FAILED
    assert (
        "timed out: no progress" in status.failure_reason and "job_timeout_seconds=3" in status.failure_reason
    )
    # beat deletes the files after it marks the job FAILED (never before: a job that committed in
    # between keeps them), so the state may be seen first
    data = Path(table.location().removeprefix("file://"))
    wait_until(lambda: data_files(data) == [], 30, "the failed job's files deleted")
    assert cluster.catalog.load_table("demo.events").metadata.current_snapshot() is None
    metrics = cluster.metrics()
    assert metrics["floe_watchdog_failed_jobs_total"] == 1 and metrics["floe_jobs_failed_total"] == 1


def test_cancel_job_deletes_its_files(cluster: Cluster) -> None:
    table = make_table(cluster.catalog, "demo.events")
    write_csv(cluster.data_dir("1") / "a.csv", rows(0, 30))
    cluster.start_coordinator()
    cluster.start_worker("1")
    with cluster.client() as client:
        reply = client.start_job(
            "demo", "events", tasks=[TaskArg("t1", "1", ["a.csv"]), TaskArg("t9", "9", ["x.csv"])]
        )
        wait_until(lambda: client.status(reply.job_id).manifests_accepted == 1, 60, "host 1's manifest")
        cancelled = client.cancel(reply.job_id, "changed my mind")
        assert cancelled.state == common_pb2.CANCELLED and cancelled.failure_reason == "changed my mind"
        with pytest.raises(grpc.RpcError) as info:
            client.commit(reply.job_id)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "CANCELLED" in (info.value.details() or "")
    assert data_files(Path(table.location().removeprefix("file://"))) == []


def test_coordinator_killed_and_restarted_mid_job(cluster: Cluster) -> None:
    make_table(cluster.catalog, "demo.events")
    write_csv(cluster.data_dir("1") / "a.csv", rows(0, 100))
    write_csv(cluster.data_dir("2") / "b.csv", rows(100, 100))
    coordinator = cluster.start_coordinator()
    with cluster.client() as client:
        reply = client.start_job(
            "demo", "events", tasks=[TaskArg("t1", "1", ["a.csv"]), TaskArg("t2", "2", ["b.csv"])]
        )
    # Given the coordinator dies (SIGKILL) after StartJob, before any worker ran (and perhaps before
    # its dispatcher published the tasks: beat's sweep publishes them once its lease has run out)
    coordinator.kill()
    cluster.start_worker("1")
    cluster.start_beat()
    # When it restarts while the job is half done, and the second host comes up
    wait_until(lambda: _manifests_recorded(cluster, reply.job_id) >= 1, 60, "first manifest")
    cluster.procs.remove(coordinator)
    cluster.start_coordinator()
    cluster.start_worker("2")
    # Then the job completes exactly once
    status = cluster.wait_for_state(reply.job_id)
    assert status.state == common_pb2.COMPLETED, cluster.logs()
    table = cluster.catalog.load_table("demo.events")
    assert read_ids(table) == list(range(200)) and len(table.metadata.snapshots) == 1


def test_worker_killed_mid_task_is_redelivered_without_duplicates(
    tmp_path: Path, redis_server: object
) -> None:
    cluster = Cluster(tmp_path / "floe", redis_server.url, {"FLOE_VISIBILITY_TIMEOUT_SECONDS": "4"})  # type: ignore[attr-defined]
    cluster.catalog.create_namespace("demo")
    try:
        make_table(cluster.catalog, "demo.events")
        big = write_big_csv(cluster.data_dir("1") / "big.csv", 3_000_000)
        cluster.start_coordinator()
        worker = cluster.start_worker("1")
        with cluster.client() as client:
            reply = client.start_job("demo", "events", tasks=[TaskArg("t1", "1", [big.name])])
        # Given the worker is killed while converting (the task marked running on its host)
        wait_until(lambda: _running(cluster, reply.job_id) == ["t1"], 60, "task running")
        time.sleep(0.3)
        worker.kill()
        status = cluster.client().status(reply.job_id)
        assert status.manifests_accepted == 0, "the task finished before the kill; make the source bigger"
        # When a new worker comes up on the same host queue once the visibility timeout (4 s) has
        # passed (kombu restores unacknowledged messages when a worker starts polling, and every
        # ~100 s after that)
        time.sleep(5)
        cluster.start_worker("1", name="worker-1-again")
        status = cluster.wait_for_state(reply.job_id, timeout=120)
        # Then the task was redelivered and every row landed once
        assert status.state == common_pb2.COMPLETED, cluster.logs()
        table = cluster.catalog.load_table("demo.events")
        ids = read_ids(table)
        assert len(ids) == 3_000_000 and ids == list(range(3_000_000))
        assert len(table.metadata.snapshots) == 1
        # and what the killed attempt had started writing is gone: no orphan files
        referenced = {f.file.file_path.removeprefix("file://") for f in table.scan().plan_files()}
        on_disk = {str(p) for p in data_files(Path(table.location().removeprefix("file://")))}
        assert on_disk == referenced
    finally:
        cluster.stop_all()


def _running(cluster: Cluster, job_id: str) -> list[str]:
    import redis

    r = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    try:
        return sorted(r.hkeys(f"floe:job:{job_id}:running"))
    finally:
        r.close()


def _manifests_recorded(cluster: Cluster, job_id: str) -> int:
    import redis

    r = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    try:
        return int(r.hlen(f"floe:job:{job_id}:manifests"))
    finally:
        r.close()


def _parse(cls: type, data: dict[str, object]) -> object:
    from google.protobuf.json_format import Parse

    return Parse(json.dumps(data), cls())
