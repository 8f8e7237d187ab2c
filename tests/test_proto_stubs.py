"""The committed generated gRPC code matches proto/, and the API surface is what clients expect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool, json_format
from google.protobuf.message import Message

from app.proto_gen.api import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
GEN_SCRIPT = REPO_ROOT / "scripts" / "gen_protos.py"
GEN_PACKAGE = Path("app") / "proto_gen"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.relative_to(root).parts
    }


def test_committed_stubs_match_regenerated(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(GEN_SCRIPT), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"gen_protos.py failed:\n{result.stdout}\n{result.stderr}"

    fresh = _tree(tmp_path / GEN_PACKAGE)
    committed = _tree(REPO_ROOT / GEN_PACKAGE)
    assert fresh, "generator produced no files"
    hint = "app/proto_gen is stale: run `.venv/bin/python scripts/gen_protos.py` and commit the result"
    missing = sorted(set(fresh) - set(committed))
    extra = sorted(set(committed) - set(fresh))
    assert not missing and not extra, f"{hint} (missing: {missing}, not generated: {extra})"
    differing = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not differing, f"{hint} (contents differ: {differing})"


def test_generated_modules_are_importable_under_app_proto_gen() -> None:
    assert coordinator_pb2.DESCRIPTOR.package == "api"
    assert worker_pb2.DESCRIPTOR.package == "api"
    assert common_pb2.DESCRIPTOR.package == "api"
    assert hasattr(coordinator_pb2_grpc, "CoordinatorStub")
    assert hasattr(coordinator_pb2_grpc, "CoordinatorServicer")
    assert hasattr(coordinator_pb2_grpc, "add_CoordinatorServicer_to_server")
    assert hasattr(worker_pb2_grpc, "WorkerStub")
    assert hasattr(worker_pb2_grpc, "WorkerServicer")
    assert hasattr(worker_pb2_grpc, "add_WorkerServicer_to_server")


# method -> (request type, response type, server streaming)
COORDINATOR_METHODS = {
    "StartJob": ("api.StartJobRequest", "api.StartJobResponse", False),
    "GetJobStatus": ("api.GetJobStatusRequest", "api.JobStatus", False),
    "CommitJob": ("api.CommitJobRequest", "api.CommitJobResponse", False),
    "ReportManifest": ("api.ReportManifestRequest", "api.ReportManifestResponse", False),
    "Heartbeat": ("api.HeartbeatRequest", "api.HeartbeatResponse", False),
    "CancelJob": ("api.CancelJobRequest", "api.JobStatus", False),
    "ListJobs": ("api.ListJobsRequest", "api.ListJobsResponse", False),
    "WatchJob": ("api.WatchJobRequest", "api.JobStatus", True),
    "ListHosts": ("api.ListHostsRequest", "api.ListHostsResponse", False),
}
WORKER_METHODS = {
    "AssignTasks": ("api.AssignTasksRequest", "api.AssignTasksResponse", False),
    "Heartbeat": ("api.WorkerHeartbeatRequest", "api.WorkerHeartbeatResponse", False),
}


@pytest.mark.parametrize(
    ("service_name", "expected"),
    [("api.Coordinator", COORDINATOR_METHODS), ("api.Worker", WORKER_METHODS)],
)
def test_services_in_descriptor_pool(service_name: str, expected: dict[str, tuple[str, str, bool]]) -> None:
    service = descriptor_pool.Default().FindServiceByName(service_name)
    actual = {
        m.name: (m.input_type.full_name, m.output_type.full_name, m.server_streaming) for m in service.methods
    }
    assert actual == expected
    assert not any(m.client_streaming for m in service.methods)


def test_job_state_enum() -> None:
    enum = descriptor_pool.Default().FindEnumTypeByName("api.JobState")
    assert {v.name: v.number for v in enum.values} == {
        "JOB_STATE_UNSPECIFIED": 0,
        "PENDING": 1,
        "RUNNING": 2,
        "COMMITTING": 3,
        "COMPLETED": 4,
        "FAILED": 5,
        "CANCELLED": 6,
    }


TABLE = {"catalog": "example", "namespace": "analytics", "table": "events"}
JOB_ID = "6f1c2b9e-3a4d-4e5f-8a7b-0c1d2e3f4a5b"

SEED_PAYLOADS: list[tuple[type[Message], dict]] = [
    (
        coordinator_pb2.StartJobRequest,
        {"table": TABLE, "requester": "demo-user", "job_timeout_seconds": 600},
    ),
    (
        worker_pb2.AssignTasksRequest,
        {
            "worker_id": "worker-1",
            "job_id": JOB_ID,
            "table": TABLE,
            "snapshot": {"snapshot_id": 1234, "commit_uuid": "0b8f6a52-9c1e-4d2a-b3f4-5e6d7c8b9a01"},
            "tasks": [{"task_id": "task-1"}, {"task_id": "task-2"}],
        },
    ),
    (coordinator_pb2.GetJobStatusRequest, {"job_id": JOB_ID}),
    (coordinator_pb2.CommitJobRequest, {"job_id": JOB_ID}),
]


@pytest.mark.parametrize(
    ("message_cls", "payload"),
    SEED_PAYLOADS,
    ids=[cls.DESCRIPTOR.full_name for cls, _ in SEED_PAYLOADS],
)
def test_walkthrough_json_payloads_parse(message_cls: type[Message], payload: dict) -> None:
    message = json_format.Parse(json.dumps(payload), message_cls())
    # Round trip with the proto field names gives back exactly the payload.
    assert json_format.MessageToDict(message, preserving_proto_field_name=True) == _int64_as_str(payload)


def _int64_as_str(value: object) -> object:
    """Proto3 JSON renders int64 as strings; only snapshot_id is int64 in the walkthrough's payloads."""
    if isinstance(value, dict):
        return {k: (str(v) if k == "snapshot_id" else _int64_as_str(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_int64_as_str(v) for v in value]
    return value


def test_walkthrough_payload_field_values() -> None:
    start = json_format.Parse(json.dumps(SEED_PAYLOADS[0][1]), coordinator_pb2.StartJobRequest())
    assert start.table.namespace == "analytics"
    assert start.job_timeout_seconds == 600
    assert not start.HasField("auto_commit")

    assign = json_format.Parse(json.dumps(SEED_PAYLOADS[1][1]), worker_pb2.AssignTasksRequest())
    assert assign.snapshot.snapshot_id == 1234
    assert [t.task_id for t in assign.tasks] == ["task-1", "task-2"]
    assert list(assign.tasks[0].paths) == []
    assert assign.tasks[0].host == ""


def test_unknown_json_field_is_rejected() -> None:
    with pytest.raises(json_format.ParseError):
        json_format.Parse('{"job_id": "x", "jobid": "y"}', coordinator_pb2.GetJobStatusRequest())
