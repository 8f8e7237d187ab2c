"""Every RPC's bad input gets the right status code and a precise message, over a real gRPC server.

The server, Redis and the catalog are real; the Celery queue is a recorder (tests/support/api_server.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.protobuf.json_format import Parse

from app.proto_gen.api import common_pb2, coordinator_pb2, worker_pb2
from tests.support.api_server import Api, call_fails, start_request
from tests.support.tables import make_table

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    "request_data, code, pattern",
    [
        ({"table": None}, INVALID, r"table is required"),
        ({"table": {"namespace": "demo"}}, INVALID, r"table\.table is required"),
        ({"table": {"table": "events"}}, INVALID, r"table\.namespace is required"),
        ({"table": {"namespace": "demo", "table": "nope"}}, NOT_FOUND, r"table demo\.nope does not exist"),
        (
            {"table": {"catalog": "other", "namespace": "demo", "table": "events"}},
            NOT_FOUND,
            r"catalog 'other'",
        ),
        ({"job_timeout_seconds": -5}, INVALID, r"job_timeout_seconds=-5 must not be negative"),
        ({"job_timeout_seconds": 10**9}, INVALID, r"exceeds the maximum"),
        ({"expected_manifest_count": -1}, INVALID, r"expected_manifest_count=-1 must not be negative"),
        (
            {"tasks": [{"task_id": "a", "paths": ["../etc/passwd"]}]},
            INVALID,
            r"tasks\[0\]\.paths\[0\].*'\.\.'",
        ),
        (
            {"tasks": [{"task_id": "a", "paths": ["/etc/passwd"]}]},
            INVALID,
            r"must be relative to the host's WORKER_DATA_BASE",
        ),
        ({"tasks": [{"task_id": "a"}, {"task_id": "a"}]}, INVALID, r"tasks\[1\]\.task_id='a' is given twice"),
        ({"tasks": [{"task_id": "a b"}]}, INVALID, r"tasks\[0\]\.task_id='a b' is not a valid id"),
        ({"tasks": [{"task_id": ""}]}, INVALID, r"tasks\[0\]\.task_id is required"),
        ({"tasks": [{"task_id": "a", "host": "h/1"}]}, INVALID, r"tasks\[0\]\.host='h/1' is not a valid id"),
        ({"tasks": [{"task_id": "a"}], "expected_manifest_count": 3}, INVALID, r"but 1 tasks were given"),
        ({"snapshot_properties": {"added-records": "5"}}, INVALID, r"'added-records' is reserved"),
        # a message quoting a 1 MiB value is cut (status details travel in metadata, capped at 16 KiB)
        (
            {"snapshot_properties": {"": "x" * (1 << 20)}},
            INVALID,
            r"^summary property ''='x+\.\.\. \(message cut: 1,048,6\d\d characters in all\)$",
        ),
        (
            {"table": {"namespace": "demo", "table": "explode"}},
            grpc.StatusCode.INTERNAL,
            r"^internal error \(ref [0-9a-f]+\)",
        ),
    ],
)
def test_start_job_bad_input(
    api: Api, request_data: dict[str, object], code: grpc.StatusCode, pattern: str
) -> None:
    make_table(api.catalog, "demo.events")
    data = dict(request_data)
    if data.get("table", 1) is None:
        request = coordinator_pb2.StartJobRequest(requester="x")
    else:
        request = start_request(**data)
    details = call_fails(api.coordinator.StartJob, request, code, pattern)
    assert "secret internal detail" not in details
    assert api.queue.sent == []


def test_v3_table_is_refused_with_failed_precondition(api: Api) -> None:
    v2 = make_table(api.catalog, "demo.v2")
    metadata = json.loads(Path(v2.metadata_location.removeprefix("file://")).read_text())
    metadata.update({"format-version": 3, "next-row-id": 0})
    path = Path(v2.metadata_location.removeprefix("file://")).with_name("v3.metadata.json")
    path.write_text(json.dumps(metadata))
    api.catalog.register_table("demo.events", path.as_uri())
    call_fails(api.coordinator.StartJob, start_request(), PRECONDITION, r"format version 3")


@pytest.mark.parametrize(
    "method, rpc_request, code, pattern",
    [
        ("GetJobStatus", coordinator_pb2.GetJobStatusRequest(), INVALID, r"job_id is required"),
        (
            "GetJobStatus",
            coordinator_pb2.GetJobStatusRequest(job_id="../x"),
            INVALID,
            r"job_id='\.\./x' is not a job id",
        ),
        (
            "GetJobStatus",
            coordinator_pb2.GetJobStatusRequest(job_id="0" * 32),
            NOT_FOUND,
            r"job '0{32}' does not exist",
        ),
        ("CommitJob", coordinator_pb2.CommitJobRequest(job_id="f" * 32), NOT_FOUND, r"does not exist"),
        ("CommitJob", coordinator_pb2.CommitJobRequest(job_id="nope"), INVALID, r"not a job id"),
        ("CancelJob", coordinator_pb2.CancelJobRequest(job_id="a" * 32), NOT_FOUND, r"does not exist"),
        (
            "ReportManifest",
            coordinator_pb2.ReportManifestRequest(job_id="a" * 32),
            INVALID,
            r"manifest is required",
        ),
        ("Heartbeat", coordinator_pb2.HeartbeatRequest(), INVALID, r"worker_id is required"),
        (
            "Heartbeat",
            coordinator_pb2.HeartbeatRequest(worker_id="w1", job_id="b" * 32),
            NOT_FOUND,
            r"does not exist",
        ),
        ("ListJobs", coordinator_pb2.ListJobsRequest(limit=-1), INVALID, r"limit=-1 must not be negative"),
        ("ListJobs", coordinator_pb2.ListJobsRequest(states=[99]), INVALID, r"states contains 99"),
        ("WatchJob", coordinator_pb2.WatchJobRequest(job_id="c" * 32), NOT_FOUND, r"does not exist"),
    ],
)
def test_coordinator_bad_input(
    api: Api, method: str, rpc_request: object, code: grpc.StatusCode, pattern: str
) -> None:
    call_fails(getattr(api.coordinator, method), rpc_request, code, pattern)


def test_job_lifecycle_errors_and_idempotency(api: Api) -> None:
    make_table(api.catalog, "demo.events")
    first = api.coordinator.StartJob(
        start_request(tasks=[{"task_id": "t1", "host": "1"}], idempotency_key="k1")
    )
    again = api.coordinator.StartJob(
        start_request(tasks=[{"task_id": "t1", "host": "1"}], idempotency_key="k1")
    )
    assert first.created and not again.created and again.job_id == first.job_id
    assert again.snapshot.snapshot_id == first.snapshot.snapshot_id
    assert api.queue.sent == [(first.job_id, "t1", "host-1")]  # enqueued once
    job_id = first.job_id
    call_fails(
        api.coordinator.CommitJob,
        coordinator_pb2.CommitJobRequest(job_id=job_id),
        PRECONDITION,
        r"not ready to commit: 0 of 1 manifests",
    )
    bad = common_pb2.ManifestInfo(task_id="t1", descriptor_json="{not json")
    call_fails(
        api.coordinator.ReportManifest,
        coordinator_pb2.ReportManifestRequest(job_id=job_id, manifest=bad),
        INVALID,
        r"not a valid manifest description",
    )
    other = common_pb2.ManifestInfo(
        task_id="t1",
        descriptor_json=json.dumps(
            {
                "task_id": "t1",
                "snapshot_id": 1,
                "commit_uuid": "x",
                "manifest_path": "/m.avro",
                "manifest_length": 1,
                "partition_spec_id": 0,
                "added_files_count": 1,
                "added_rows_count": 1,
                "added_bytes": 1,
                "partitions": [],
                "data_files": ["/d.parquet"],
            }
        ),
    )
    call_fails(
        api.coordinator.ReportManifest,
        coordinator_pb2.ReportManifestRequest(job_id=job_id, manifest=other),
        INVALID,
        r"belongs to snapshot 1, not to job",
    )
    cancelled = api.coordinator.CancelJob(coordinator_pb2.CancelJobRequest(job_id=job_id))
    assert cancelled.state == common_pb2.CANCELLED and cancelled.failure_reason == "cancelled by request"
    assert api.queue.revoked == ["celery-1"]
    call_fails(
        api.coordinator.CommitJob,
        coordinator_pb2.CommitJobRequest(job_id=job_id),
        PRECONDITION,
        r"is CANCELLED",
    )
    # A job started without tasks or an expected count waits for an explicit CommitJob
    plain = api.coordinator.StartJob(start_request())
    assert not plain.status.auto_commit and plain.status.expected_manifests == 0
    call_fails(
        api.coordinator.CommitJob,
        coordinator_pb2.CommitJobRequest(job_id=plain.job_id),
        PRECONDITION,
        r"no tasks registered yet",
    )
    listed = api.coordinator.ListJobs(coordinator_pb2.ListJobsRequest(states=[common_pb2.CANCELLED]))
    assert [j.job_id for j in listed.jobs] == [job_id]


def test_assign_tasks_bad_input(api: Api) -> None:
    make_table(api.catalog, "demo.events")
    job = api.coordinator.StartJob(start_request())
    base = {"worker_id": "worker-1", "job_id": job.job_id, "tasks": [{"task_id": "task-1"}]}

    def assign(**data: object) -> worker_pb2.AssignTasksRequest:
        return Parse(json.dumps({**base, **data}), worker_pb2.AssignTasksRequest())

    call_fails(
        api.worker.AssignTasks,
        assign(worker_id="worker-2"),
        INVALID,
        r"does not name this worker \('worker-1'\)",
    )
    call_fails(api.worker.AssignTasks, assign(job_id="d" * 32), NOT_FOUND, r"does not exist")
    call_fails(api.worker.AssignTasks, assign(tasks=[]), INVALID, r"tasks is empty")
    call_fails(
        api.worker.AssignTasks,
        assign(snapshot={"snapshot_id": 1234}),
        PRECONDITION,
        r"snapshot\.snapshot_id=1234 is not",
    )
    call_fails(
        api.worker.AssignTasks, assign(tasks=[{"task_id": "t", "paths": ["../../x"]}]), INVALID, r"'\.\.'"
    )
    call_fails(
        api.worker.AssignTasks,
        assign(table={"namespace": "demo", "table": "other"}),
        PRECONDITION,
        r"is not the table of job",
    )
    ok = api.worker.AssignTasks(assign())
    assert list(ok.accepted_task_ids) == ["task-1"]
    beat = api.worker.Heartbeat(worker_pb2.WorkerHeartbeatRequest(worker_id="worker-1"))
    assert beat.active_tasks == 1


def test_committed_snapshot_stays_findable_after_the_job_expires(api: Api) -> None:
    from app import keys
    from app.jobs.model import JobState

    make_table(api.catalog, "demo.events")
    job_id = api.coordinator.StartJob(start_request()).job_id
    store = api.service.store
    assert store.transition(job_id, [JobState.PENDING], JobState.COMMITTING)[0]
    assert store.complete(job_id, 4242)
    assert 0 < api.redis.ttl(keys.job(job_id)) <= 3600
    api.redis.delete(*keys.job_keys(job_id))  # what the retention expiry does
    status = api.coordinator.GetJobStatus(coordinator_pb2.GetJobStatusRequest(job_id=job_id))
    assert status.state == common_pb2.COMPLETED and status.committed_snapshot_id == 4242


def _report_merged_job(api: Api, tmp_path: Path, auto_commit: bool) -> tuple[str, list[str]]:
    """A job of 12 one-file tasks on a table that merges them at commit; every manifest reported.
    -> (job id, the task manifests' paths)."""
    from tests.support.tables import rows, write_csv
    from workers.conversion import write_task_manifest

    merging = {"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "10"}
    table = make_table(api.catalog, "demo.events", properties=merging)
    tasks = [{"task_id": f"t{i}", "host": "1"} for i in range(12)]
    job_id = api.coordinator.StartJob(start_request(tasks=tasks, auto_commit=auto_commit)).job_id
    snapshot = api.service.store.require(job_id).snapshot
    paths = []
    for i in range(12):
        m = write_task_manifest(snapshot, table, [write_csv(tmp_path / f"s{i}.csv", rows(i * 5, 5))], f"t{i}")
        assert m is not None
        paths.append(m.manifest_path)
        info = common_pb2.ManifestInfo(task_id=m.task_id, descriptor_json=m.to_json())
        api.coordinator.ReportManifest(coordinator_pb2.ReportManifestRequest(job_id=job_id, manifest=info))
    return job_id, sorted(paths)


def test_a_commit_whose_committer_died_is_completed_and_its_merged_manifests_deleted(
    api: Api, tmp_path: Path
) -> None:
    # The committer's catalog call landed, then it died holding the commit lock, before marking the
    # job complete or deleting the task manifests it merged away. The auto-committer finds the
    # snapshot on main, completes the job and deletes those manifests.
    from app.iceberg import commit_distributed_snapshot
    from app.jobs.model import JobState
    from tests.support.tables import read_ids

    job_id, paths = _report_merged_job(api, tmp_path, auto_commit=False)
    store = api.service.store
    job = store.require(job_id)
    assert store.transition(job_id, [job.state], JobState.COMMITTING)[0]
    assert store.acquire_commit_lock(job_id) is not None  # held by the dead committer
    table = api.catalog.load_table("demo.events")
    outcome = commit_distributed_snapshot(table, job.snapshot, store.manifests(job_id), {"floe.job-id": job_id})
    snapshot_id = outcome.snapshot_id
    assert sorted(outcome.unreferenced) == sorted(paths) and all(Path(p.removeprefix("file://")).exists() for p in paths)
    api.service.autocommit_tick()
    done = store.require(job_id)
    assert done.state == JobState.COMPLETED and done.committed_snapshot_id == snapshot_id
    assert not any(Path(p.removeprefix("file://")).exists() for p in paths)
    assert read_ids(api.catalog.load_table("demo.events")) == list(range(60))


def test_merged_away_task_manifests_are_deleted_after_the_job_is_complete(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job's commit merges its 12 task manifests; the job is marked COMPLETED first, so a client
    # waiting on it is not held up by the deletes, and the merged-away manifests are deleted after.
    from app.jobs import cleanup as cleanup_module
    from app.jobs.model import JobState
    from tests.support.tables import read_ids

    deletes: list[tuple[list[JobState], list[str]]] = []
    real_delete = cleanup_module.delete_quietly

    def recording_delete(io: object, targets: object) -> None:
        listed = list(targets)  # type: ignore[call-overload]
        deletes.append(([j.state for j in api.service.list_jobs(10)], listed))  # the test's one job
        real_delete(io, listed)  # type: ignore[arg-type]

    monkeypatch.setattr(cleanup_module, "delete_quietly", recording_delete)
    job_id, paths = _report_merged_job(api, tmp_path, auto_commit=True)

    status = api.coordinator.GetJobStatus(coordinator_pb2.GetJobStatusRequest(job_id=job_id))
    assert status.state == common_pb2.COMPLETED  # the last report committed the job
    merged_deletes = [(state, listed) for state, listed in deletes if set(listed) & set(paths)]
    assert merged_deletes == [([JobState.COMPLETED], paths)]
    assert not any(Path(p.removeprefix("file://")).exists() for p in paths)
    table = api.catalog.load_table("demo.events")
    assert len(table.current_snapshot().manifests(table.io)) == 1  # type: ignore[union-attr]
    assert read_ids(table) == list(range(60))


def test_a_committer_that_dies_before_its_deletes_leaves_them_to_the_beat_sweep(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job is marked COMPLETED, then the coordinator dies before deleting the task manifests the
    # commit merged away and an orphan a killed attempt left. Beat's sweep deletes them, once the
    # grace period has passed, and never touches what the snapshot references.
    import time

    from app.jobs import cleanup as cleanup_module
    from app.jobs.model import JobState
    from tests.support.tables import read_ids

    job_id, paths = _report_merged_job(api, tmp_path, auto_commit=False)
    store = api.service.store
    table = api.catalog.load_table("demo.events")
    orphan = Path(table.location().removeprefix("file://")) / "data" / "killed-attempt.parquet"
    orphan.write_bytes(b"half a file")
    store.journal_file(job_id, orphan.as_uri())

    def dies(io: object, targets: object) -> None:
        raise SystemExit("coordinator killed")

    monkeypatch.setattr(cleanup_module, "delete_quietly", dies)
    with pytest.raises(SystemExit):
        api.service.commit(job_id)
    monkeypatch.undo()
    assert store.require(job_id).state == JobState.COMPLETED
    assert all(Path(p.removeprefix("file://")).exists() for p in paths) and orphan.exists()

    assert api.service.autocommit_tick(now=time.time() + 10) == []  # within the grace period: untouched
    assert all(Path(p.removeprefix("file://")).exists() for p in paths) and orphan.exists()
    assert api.service.files.sweep(now=time.time() + 120) == [job_id]
    assert not any(Path(p.removeprefix("file://")).exists() for p in paths) and not orphan.exists()
    assert api.service.files.sweep(now=time.time() + 120) == []  # done once
    assert read_ids(api.catalog.load_table("demo.events")) == list(range(60))


def test_a_reported_manifest_described_as_inline_is_refused(api: Api, tmp_path: Path) -> None:
    # Inline manifests (app/iceberg/inline_manifest.py) are recorded by Floe's own workers through the
    # job store, header and all; a report must name a file the coordinator can read.
    from tests.support.tables import rows, write_csv
    from workers.conversion import write_task_manifest

    table = make_table(api.catalog, "demo.events")
    job_id = api.coordinator.StartJob(start_request(tasks=[{"task_id": "t1", "host": "1"}])).job_id
    snapshot = api.service.store.require(job_id).snapshot
    m = write_task_manifest(snapshot, table, [write_csv(tmp_path / "a.csv", rows(0, 5))], "t1", inline_bytes=16384)
    assert m is not None and m.inline is not None
    info = common_pb2.ManifestInfo(task_id="t1", descriptor_json=m.to_json())
    call_fails(
        api.coordinator.ReportManifest,
        coordinator_pb2.ReportManifestRequest(job_id=job_id, manifest=info),
        INVALID,
        rf"^manifest {m.manifest_path} is described as kept in the job store \(inline\); a reported manifest "
        r"must be a file the coordinator can read: leave out 'inline' and write the file$",
    )
    assert api.service.store.manifest(job_id, "t1") is None  # nothing recorded
