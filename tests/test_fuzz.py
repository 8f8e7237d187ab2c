"""Every request field of api.Coordinator and api.Worker fuzzed (hypothesis) over a real gRPC server.

The server is the one ``floe coordinator`` builds (``create_server``: error interceptor, health,
reflection, the 16 MB receive limit) with the real servicers and a real :class:`JobService` over a
real redis-server and a real SQLite catalog; only the Celery queue is a recorder. For every input:

* the status is never UNKNOWN and never INTERNAL (bad input is the caller's fault, not the server's);
* the server stays up: health answers SERVING for every service afterwards;
* no job is corrupted: a *golden* job created before fuzzing (a table, two tasks, one real manifest
  written and recorded) reads back identical through GetJobStatus, its Redis keys are byte for
  byte what they were and its data files are still there; every job hash (and its tasks and
  manifests) in Redis still parses.

Fuzzed requests may legitimately act on *scratch* jobs (their ids are among the job ids drawn), on
the table ``demo.scratch``. File paths in fuzzed manifest descriptions name files of a sandbox
inside that table's location (a pool of files that exist, recreated before every example) or of a
sandbox outside it, whose files must never be deleted: the coordinator deletes the files a losing
report names.

The server, the golden job and the judge are tests/support/fuzz_server.py, the strategies
tests/support/fuzz_inputs.py; tests/test_fuzz_regressions.py pins the bugs this fuzzing found.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import event, given, settings
from hypothesis import strategies as st

from app.proto_gen.api import common_pb2, coordinator_pb2, worker_pb2
from tests.support.api_server import WORKER_ID
from tests.support.fuzz_inputs import (
    INT64_EDGES,
    MB_STRING,
    Fields,
    descriptor,
    ids,
    ingest_tasks,
    int32,
    int64,
    job_ids,
    json_values,
    new_scratch_job,
    optional,
    pick,
    scratch_job,
    short_text,
    table_refs,
    text,
    valid_ids,
    valid_table_ref,
)
from tests.support.fuzz_server import (
    BAD,
    EXAMPLES,
    FUZZ,
    MAX_RECEIVE,
    METHODS,
    Api,
    check_intact,
    decodes,
    fuzz_api,
    outcome,
    raw_call,
    start_fuzz_job,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def api(tmp_path: Path, redis_server: object) -> Iterator[Api]:
    yield from fuzz_api(tmp_path, redis_server)


# --------------------------------------------------------------------------------------------
# api.Coordinator, field by field
# --------------------------------------------------------------------------------------------

OK_OR_REFUSED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}


@FUZZ
@given(data=st.data())
def test_fuzz_start_job(api: Api, data: st.DataObject) -> None:
    field = Fields(
        data,
        [
            "table",
            "requester",
            "timeout",
            "tasks",
            "expected",
            "auto_commit",
            "properties",
            "idempotency_key",
        ],
    )
    request = coordinator_pb2.StartJobRequest(
        requester=field("requester", st.sampled_from(["", "fuzz", "ci@example.org"]), text),
        job_timeout_seconds=field("timeout", st.integers(0, 3600), int32),
        tasks=field(
            "tasks", st.just([]) | ingest_tasks(True, st.sampled_from(["", "1"])), ingest_tasks(False, ids)
        ),
        expected_manifest_count=field("expected", st.just(0), int32),
        snapshot_properties=field(
            "properties",
            st.dictionaries(st.sampled_from(["k", "team", "run"]), valid_ids, max_size=2),
            st.dictionaries(text, text, max_size=3),
        ),
        idempotency_key=field("idempotency_key", st.just("") | valid_ids, text),
    )
    optional(request, "table", field("table", valid_table_ref(), st.none() | table_refs()))
    if (auto := field("auto_commit", st.none(), st.none() | st.booleans())) is not None:
        request.auto_commit = auto
    code = outcome(api.coordinator.StartJob, request)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # only a request over the server's receive limit
        assert request.ByteSize() > MAX_RECEIVE, request.ByteSize()
    else:
        assert code in OK_OR_REFUSED, code
    check_intact(api)


@FUZZ
@given(data=st.data())
def test_fuzz_job_id_rpcs(api: Api, data: st.DataObject) -> None:
    """GetJobStatus, WatchJob, CancelJob (and its reason) and CommitJob."""
    if data.draw(st.integers(0, 3)) == 0:
        new_scratch_job(api, data)
    job_id = data.draw(job_ids(api), label="job_id")
    outcome(api.coordinator.GetJobStatus, coordinator_pb2.GetJobStatusRequest(job_id=job_id))
    outcome(api.coordinator.WatchJob, coordinator_pb2.WatchJobRequest(job_id=job_id), stream=True)
    if data.draw(st.booleans()):
        reason = data.draw(st.one_of(st.just(""), text), label="reason")
        outcome(api.coordinator.CancelJob, coordinator_pb2.CancelJobRequest(job_id=job_id, reason=reason))
    outcome(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=job_id))
    check_intact(api)


@FUZZ
@given(data=st.data())
def test_fuzz_report_manifest(api: Api, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        new_scratch_job(api, data)
    field = Fields(data, ["job_id", "worker_id", "manifest", "task_id", "info", "descriptor_json"])
    job_id = field("job_id", scratch_job(api, 3), job_ids(api))
    known: list[str] = []
    if re.fullmatch("[0-9a-f]{32}", job_id):
        known = [t.task_id for t in api.service.store.tasks(job_id)]
    task_id = field("task_id", st.tuples(pick(known), valid_ids).map(lambda p: p[0] or p[1]), ids)
    request = coordinator_pb2.ReportManifestRequest(
        job_id=job_id, worker_id=field("worker_id", st.sampled_from(["", "1", "worker-1"]), ids)
    )
    if field("manifest", st.just(True), st.booleans()):
        described = descriptor(data, api, job_id, task_id)
        request.manifest.CopyFrom(
            common_pb2.ManifestInfo(
                task_id=task_id,
                manifest_path=field("info", st.just(str(described.get("manifest_path", ""))), text),
                record_count=field("info", st.just(0), int64),
                file_count=field("info", st.just(0), int64),
                size_bytes=field("info", st.just(0), int64),
                descriptor_json=field(
                    "descriptor_json",
                    st.just(json.dumps(described)),
                    st.one_of(text, json_values().map(json.dumps)),
                ),
            )
        )
    api.refill_pool()
    outcome(api.coordinator.ReportManifest, request)
    # commit what was accepted (refused with FAILED_PRECONDITION while manifests are missing)
    outcome(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=job_id))
    check_intact(api)


@FUZZ
@given(data=st.data())
def test_fuzz_heartbeat_and_list_jobs(api: Api, data: st.DataObject) -> None:
    field = Fields(data, ["worker_id", "job_id", "task_ids", "limit", "states"])
    beat = coordinator_pb2.HeartbeatRequest(
        worker_id=field("worker_id", valid_ids, ids),
        job_id=field("job_id", st.just("") | scratch_job(api), job_ids(api)),
        task_ids=field("task_ids", st.lists(valid_ids, max_size=3), st.lists(ids, max_size=4)),
    )
    outcome(api.coordinator.Heartbeat, beat)
    listing = coordinator_pb2.ListJobsRequest(
        limit=field("limit", st.integers(0, 1000), int32),
        states=field("states", st.lists(st.integers(1, 6), max_size=3), st.lists(int32, max_size=4)),
    )
    outcome(api.coordinator.ListJobs, listing)
    check_intact(api)


# --------------------------------------------------------------------------------------------
# api.Worker
# --------------------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_fuzz_assign_tasks(api: Api, data: st.DataObject) -> None:
    if data.draw(st.integers(0, 2)) == 0:
        api.scratch.append(start_fuzz_job(api, "scratch", []))  # a job waiting for AssignTasks
    field = Fields(data, ["worker_id", "job_id", "table", "snapshot", "tasks"])
    job_id = field("job_id", scratch_job(api, 3), job_ids(api))
    request = worker_pb2.AssignTasksRequest(
        worker_id=field("worker_id", st.just(WORKER_ID), ids),
        job_id=job_id,
        tasks=field("tasks", ingest_tasks(True, st.sampled_from(["", WORKER_ID])), ingest_tasks(False, ids)),
    )
    optional(request, "table", field("table", st.none() | valid_table_ref(), st.none() | table_refs()))
    try:
        snapshot_id, commit_uuid = api.snapshot_of(job_id)
    except Exception:  # noqa: BLE001 - not a job
        snapshot_id, commit_uuid = 0, ""
    valid_snapshot = st.none() | st.just(
        common_pb2.DistributedSnapshot(snapshot_id=snapshot_id, commit_uuid=commit_uuid)
    )
    fuzz_snapshot = st.builds(
        common_pb2.DistributedSnapshot,
        snapshot_id=st.one_of(st.just(snapshot_id), int64),
        commit_uuid=st.one_of(st.just(commit_uuid), text),
        parent_snapshot_id=int64,
        has_parent=st.booleans(),
        table_uuid=text,
        format_version=int32,
        schema_id=int32,
        spec_id=int32,
        metadata_location=text,
    )
    optional(request, "snapshot", field("snapshot", valid_snapshot, fuzz_snapshot))
    outcome(api.worker.AssignTasks, request)
    heartbeat = worker_pb2.WorkerHeartbeatRequest(worker_id=data.draw(st.one_of(st.just(WORKER_ID), ids)))
    outcome(api.worker.Heartbeat, heartbeat)
    check_intact(api)


# --------------------------------------------------------------------------------------------
# empty, oversized and raw messages
# --------------------------------------------------------------------------------------------


def _fill_strings(message: Message, value: str, depth: int = 0) -> Message:
    """Every string field (and one element of every repeated string / message field) set to ``value``."""
    for fd in message.DESCRIPTOR.fields:
        repeated = fd.is_repeated
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            getattr(message, fd.name)[value] = value
        elif fd.type == fd.TYPE_STRING:
            if repeated:
                getattr(message, fd.name).append(value)
            else:
                setattr(message, fd.name, value)
        elif fd.type == fd.TYPE_MESSAGE and depth < 2 and fd.message_type.full_name.startswith("api."):
            child = getattr(message, fd.name).add() if repeated else getattr(message, fd.name)
            _fill_strings(child, value, depth + 1)
    return message


def _unknown_field(size: int, number: int = 1000) -> bytes:
    """A length-delimited field no request type declares (parsers keep it as an unknown field)."""
    return _varint(number << 3 | 2) + _varint(size) + b"u" * size


@pytest.mark.parametrize("method", sorted(METHODS))
def test_empty_and_oversized_messages(api: Api, method: str) -> None:
    request_type = METHODS[method][0]
    # empty: every field at its default
    code, details = raw_call(api, method, b"")
    assert code not in BAD, (code, details)
    # every string field 1 MB long, and 1 MB of an unknown field (under the receive limit)
    megabyte = _fill_strings(request_type(), MB_STRING).SerializeToString() + _unknown_field(1 << 20)
    assert len(megabyte) < MAX_RECEIVE
    code, details = raw_call(api, method, megabyte)
    assert code not in BAD, (code, details)
    # over the server's 16 MB receive limit: refused before any handler runs
    huge = request_type().SerializeToString() + _unknown_field(MAX_RECEIVE)
    code, details = raw_call(api, method, huge)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    check_intact(api)


def test_ten_thousand_tasks_and_huge_repeated_fields(api: Api) -> None:
    tasks = [
        common_pb2.IngestTask(task_id=f"task-{i}", host="1", paths=[f"d{i}/*.csv"]) for i in range(10_000)
    ]
    start = api.coordinator.StartJob(
        coordinator_pb2.StartJobRequest(
            table=common_pb2.TableRef(namespace="demo", table="scratch"), requester="fuzz", tasks=tasks
        ),
        timeout=60,
    )
    assert start.status.tasks_total == 10_000 and len(api.queue.sent) >= 10_000
    assigned = api.worker.AssignTasks(
        worker_pb2.AssignTasksRequest(
            worker_id=WORKER_ID,
            job_id=api.scratch[1],
            tasks=[common_pb2.IngestTask(task_id=f"a-{i}") for i in range(10_000)],
        ),
        timeout=60,
    )
    assert len(assigned.accepted_task_ids) == 10_000
    again = outcome(
        api.worker.AssignTasks,
        worker_pb2.AssignTasksRequest(
            worker_id=WORKER_ID,
            job_id=api.scratch[1],
            tasks=[common_pb2.IngestTask(task_id=f"a-{i}") for i in range(10_000)] * 2,
        ),
    )
    assert again == grpc.StatusCode.INVALID_ARGUMENT  # every id given twice
    outcome(api.worker.Heartbeat, worker_pb2.WorkerHeartbeatRequest(worker_id=WORKER_ID))
    outcome(
        api.coordinator.Heartbeat,
        coordinator_pb2.HeartbeatRequest(worker_id="w", job_id=api.scratch[0], task_ids=["t"] * 100_000),
    )
    outcome(
        api.coordinator.ListJobs, coordinator_pb2.ListJobsRequest(limit=2**31 - 1, states=[1, 2] * 50_000)
    )
    too_many = [common_pb2.IngestTask(task_id=f"t{i}") for i in range(100_001)]
    code = outcome(
        api.coordinator.StartJob,
        coordinator_pb2.StartJobRequest(
            table=common_pb2.TableRef(namespace="demo", table="scratch"), tasks=too_many
        ),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    check_intact(api)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@st.composite
def wire_messages(draw: st.DrawFn) -> bytes:
    """Well-formed protobuf wire data with arbitrary field numbers, wire types and values."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 6))):
        number = draw(st.one_of(st.integers(1, 10), st.integers(1, 2**29 - 1)))
        wire = draw(st.sampled_from([0, 1, 2, 5]))
        out += _varint(number << 3 | wire)
        if wire == 0:
            out += _varint(draw(st.one_of(st.integers(-(2**63), 2**64 - 1), st.sampled_from(INT64_EDGES))))
        elif wire == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif wire == 5:
            out += draw(st.binary(min_size=4, max_size=4))
        else:
            payload = draw(
                st.one_of(
                    st.binary(max_size=64),
                    short_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
                    wire_messages(),
                )
            )
            out += _varint(len(payload)) + payload
    return bytes(out)


@settings(FUZZ, max_examples=EXAMPLES * 3)
@given(data=st.data())
def test_fuzz_raw_bytes(api: Api, data: st.DataObject) -> None:
    """Random bytes and random wire data as the serialized request of every method."""
    method = data.draw(st.sampled_from(sorted(METHODS)))
    payload = data.draw(
        st.one_of(
            st.binary(max_size=256),
            wire_messages(),
            st.sampled_from(
                [b"", b"\x00", b"\xff" * 10, b"\x0a\x05\xff\xfe\xfd\xfc\xfb", b"\x0a\xff\xff\xff\x0f"]
            ),
        )
    )
    code, details = raw_call(api, method, payload)
    if decodes(method, payload):
        assert code not in BAD, (method, payload, code, details)
        event(f"raw decodable {method} -> {code.name}")
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, payload, code, details)
        event(f"raw undecodable -> {code.name}")
    check_intact(api)
