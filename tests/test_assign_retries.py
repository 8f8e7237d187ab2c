"""A retried AssignTasks is harmless in every job state (issue 14), over the real api.Worker facade and
api.Coordinator servers, a real redis-server and a real catalog (the Celery queue records what is sent).

Known tasks (same ids, same host) are acknowledged in PENDING, RUNNING, COMMITTING, COMPLETED, FAILED
and CANCELLED: nothing is converted or enqueued again, recorded manifests are re-reported and ignored.
New ids on a job that takes no more tasks are refused as a whole request; a known id for another host
is refused naming both hosts.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.protobuf.json_format import Parse

from app.jobs.model import OPEN_STATES, JobState, TaskSpec
from app.proto_gen.api import common_pb2, coordinator_pb2, worker_pb2
from tests.support.api_server import WORKER_ID, Api, call_fails, start_request
from tests.support.tables import make_table, read_ids, rows, write_csv
from workers.conversion import write_task_manifest

pytestmark = pytest.mark.integration
STATES = ["PENDING", "RUNNING", "COMMITTING", "COMPLETED", "FAILED", "CANCELLED"]


def _assign(api: Api, job_id: str, *task_ids: str) -> worker_pb2.AssignTasksResponse:
    request = {"worker_id": WORKER_ID, "job_id": job_id, "tasks": [{"task_id": t} for t in task_ids]}
    return api.worker.AssignTasks(Parse(json.dumps(request), worker_pb2.AssignTasksRequest()), timeout=10)


def _report(api: Api, tmp_path: Path, job_id: str, task_id: str, first: int) -> str:
    table = api.catalog.load_table("demo.events")
    snapshot = api.service.store.require(job_id).snapshot
    m = write_task_manifest(snapshot, table, [write_csv(tmp_path / f"{task_id}.csv", rows(first, 5))], task_id)
    assert m is not None
    info = common_pb2.ManifestInfo(task_id=task_id, descriptor_json=m.to_json())
    api.coordinator.ReportManifest(coordinator_pb2.ReportManifestRequest(job_id=job_id, manifest=info))
    return m.manifest_path


def _job_in(api: Api, tmp_path: Path, state: str) -> tuple[str, dict[str, str]]:
    """A job whose tasks t1, t2 were assigned to this worker, driven into ``state``.
    -> (job id, the manifests recorded so far by task id)."""
    make_table(api.catalog, "demo.events")
    job_id = api.coordinator.StartJob(start_request()).job_id
    assert list(_assign(api, job_id, "t1", "t2").accepted_task_ids) == ["t1", "t2"]
    store = api.service.store
    recorded: dict[str, str] = {}
    if state in ("RUNNING", "COMMITTING", "COMPLETED"):
        recorded["t1"] = _report(api, tmp_path, job_id, "t1", 0)
    if state in ("COMMITTING", "COMPLETED"):
        recorded["t2"] = _report(api, tmp_path, job_id, "t2", 5)
    if state == "COMPLETED":
        done = api.coordinator.CommitJob(coordinator_pb2.CommitJobRequest(job_id=job_id), timeout=30)
        assert done.snapshot_id
    elif state == "COMMITTING":
        assert store.transition(job_id, OPEN_STATES, JobState.COMMITTING)[0]
    elif state in ("FAILED", "CANCELLED"):
        assert store.transition(job_id, OPEN_STATES, JobState(state), {"failure_reason": "test"})[0]
    assert store.require(job_id).state.value == state
    return job_id, recorded


@pytest.mark.parametrize("state", STATES)
def test_a_retried_assign_is_acknowledged_in_every_state(api: Api, tmp_path: Path, state: str) -> None:
    # Given a job in `state` whose tasks this worker already took
    job_id, recorded = _job_in(api, tmp_path, state)
    sent, before = len(api.queue.sent), api.service.store.require(job_id)

    # When the scheduler retries its AssignTasks (its first answer was lost)
    again = _assign(api, job_id, "t1", "t2")

    # Then it succeeds, says both are known, re-reports what is recorded, and nothing runs again
    assert list(again.accepted_task_ids) == []
    assert sorted(again.already_assigned_task_ids) == ["t1", "t2"]
    assert dict(again.recorded_manifests) == recorded
    assert common_pb2.JobState.Name(again.job_state) == state
    assert len(api.queue.sent) == sent
    after = api.service.store.require(job_id)
    assert (after.state, after.manifests_accepted, after.tasks_total) == (
        before.state, before.manifests_accepted, before.tasks_total,
    )  # fmt: skip
    if state == "COMPLETED":
        table = api.catalog.load_table("demo.events")
        assert len(table.snapshots()) == 1 and read_ids(table) == list(range(10))


@pytest.mark.parametrize("state", ["COMMITTING", "COMPLETED", "FAILED", "CANCELLED"])
def test_new_ids_on_a_closed_job_are_refused_as_a_whole(api: Api, tmp_path: Path, state: str) -> None:
    job_id, _ = _job_in(api, tmp_path, state)
    call_fails(
        api.worker.AssignTasks,
        Parse(
            json.dumps({"worker_id": WORKER_ID, "job_id": job_id, "tasks": [{"task_id": "t1"}, {"task_id": "t3"}]}),
            worker_pb2.AssignTasksRequest(),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        rf"job {job_id} is {state}: it takes no more tasks; new task ids refused: t3 \(nothing was registered\)",
    )
    assert [t.task_id for t in api.service.store.tasks(job_id)] == ["t1", "t2"]


def test_new_ids_on_an_open_job_run_beside_known_ones(api: Api, tmp_path: Path) -> None:
    job_id, _ = _job_in(api, tmp_path, "RUNNING")
    mixed = _assign(api, job_id, "t1", "t3")
    assert list(mixed.accepted_task_ids) == ["t3"] and list(mixed.already_assigned_task_ids) == ["t1"]
    assert [s[1] for s in api.queue.sent] == ["t1", "t2", "t3"]


def test_a_known_task_sent_for_another_host_is_refused_naming_both(api: Api) -> None:
    make_table(api.catalog, "demo.events")
    job_id = api.coordinator.StartJob(start_request(tasks=[{"task_id": "t1", "host": "other-host"}])).job_id
    call_fails(
        api.worker.AssignTasks,
        Parse(
            json.dumps({"worker_id": WORKER_ID, "job_id": job_id, "tasks": [{"task_id": "t9"}, {"task_id": "t1"}]}),
            worker_pb2.AssignTasksRequest(),
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        rf"task 't1' is registered on host 'other-host', not '{WORKER_ID}'; nothing was registered",
    )
    assert api.service.store.tasks(job_id) == [TaskSpec("t1", "other-host")]
