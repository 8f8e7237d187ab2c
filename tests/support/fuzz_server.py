"""The fuzz tests' server and judge (tests/test_fuzz.py, tests/test_fuzz_regressions.py).

A real gRPC server as ``floe coordinator`` builds it over a real JobService, redis-server and SQLite
catalog (only the Celery queue is a recorder), with a *golden* job made before fuzzing whose status,
Redis keys and files must stay what they were (:func:`check_intact`), *scratch* jobs fuzzed requests may
act on, and a sandbox of files inside and outside the scratch table. :func:`outcome` calls an RPC and
asserts the status is never UNKNOWN or INTERNAL; :func:`raw_call` sends bytes as a request.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc
import redis
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.control import currently_in_test_context

from app import keys
from app.iceberg import ManifestDescriptor
from app.proto_gen.api import common_pb2, coordinator_pb2, worker_pb2
from tests.support.api_server import ApiServer, serve_api
from tests.support.tables import make_table, rows, write_csv
from workers.conversion import write_task_manifest

# hypothesis keeps caches under ./.hypothesis by default: keep them out of the work tree
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "floe-hypothesis"))

POOL = 16  # files in the in-table sandbox
MAX_RECEIVE = 16 * 1024 * 1024  # app.grpc.server.create_server's grpc.max_receive_message_length
BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
JOB_KEY = re.compile(r"^floe:job:([0-9a-f]{32})$")

# The api fixture is built once per test and deliberately shared by all of a test's examples:
# state accumulating across examples (jobs, tasks, manifests) is part of what is fuzzed.
# FLOE_FUZZ_EXAMPLES=2000 digs deeper (add --timeout 0); the default keeps the module under a minute
EXAMPLES = int(os.environ.get("FLOE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --------------------------------------------------------------------------------------------
# the server (tests/support/api_server.py) and the golden job
# --------------------------------------------------------------------------------------------


@dataclass
class Api(ApiServer):
    sandbox: Path = Path()  # inside demo.scratch's location
    outside: Path = Path()  # outside every table: nothing in it may ever be deleted
    golden_id: str = ""
    golden_status: common_pb2.JobStatus | None = None
    golden_keys: dict[str, Any] = field(default_factory=dict)
    golden_files: list[Path] = field(default_factory=list)
    scratch: list[str] = field(default_factory=list)
    written: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # job -> task -> manifest
    checks: int = 0

    def snapshot_of(self, job_id: str) -> tuple[int, str]:
        snap = self.service.status(job_id).snapshot
        return snap.snapshot_id, snap.commit_uuid

    def pool(self, i: int) -> Path:
        return self.sandbox / f"pool-{i % POOL}.avro"

    def refill_pool(self) -> None:
        """The sandbox's files exist again (losing reports delete what they name)."""
        for i in range(POOL):
            if not self.pool(i).exists():
                self.pool(i).write_bytes(b"not really a manifest")


def dump_keys(client: redis.Redis, job_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in [k for k in keys.job_keys(job_id) if client.exists(k)]:
        kind = client.type(key)
        if kind == "hash":
            out[key] = client.hgetall(key)
        elif kind == "set":
            out[key] = sorted(client.smembers(key))  # type: ignore[arg-type]
        elif kind == "list":
            out[key] = client.lrange(key, 0, -1)
        else:
            out[key] = client.get(key)
    return out


def start_fuzz_job(api: Api, table: str, tasks: list[common_pb2.IngestTask], **extra: Any) -> str:
    reply = api.coordinator.StartJob(
        coordinator_pb2.StartJobRequest(
            table=common_pb2.TableRef(catalog="default", namespace="demo", table=table),
            requester="fuzz",
            tasks=tasks,
            **extra,
        ),
        timeout=30,
    )
    return str(reply.job_id)


def fuzz_api(tmp_path: Path, redis_server: object) -> Iterator[Api]:
    """The body of the fuzz tests' ``api`` fixture."""
    with serve_api(tmp_path, redis_server.url) as server:  # type: ignore[attr-defined]
        make_table(server.catalog, "demo.events")
        scratch = make_table(server.catalog, "demo.scratch")
        sandbox = Path(scratch.location().removeprefix("file://")) / "data" / "fuzz"
        sandbox.mkdir(parents=True)
        outside = tmp_path / "outside"
        outside.mkdir()
        for i in range(POOL):
            (outside / f"pool-{i}.avro").write_text("never delete me")
        api = Api(
            **{f.name: getattr(server, f.name) for f in fields(ApiServer)}, sandbox=sandbox, outside=outside
        )
        _make_golden_job(api, tmp_path)
        api.scratch = [
            start_fuzz_job(
                api, "scratch", [common_pb2.IngestTask(task_id=f"s{i}", host="1") for i in range(3)]
            ),
            start_fuzz_job(api, "scratch", []),  # waits for AssignTasks and CommitJob
            start_fuzz_job(api, "scratch", [common_pb2.IngestTask(task_id="c1")], auto_commit=False),
        ]
        api.coordinator.CancelJob(coordinator_pb2.CancelJobRequest(job_id=api.scratch[2]), timeout=10)
        api.refill_pool()
        yield api


def _make_golden_job(api: Api, tmp_path: Path) -> None:
    """A real job: two tasks on two hosts, task t1's files written and its manifest recorded."""
    api.golden_id = start_fuzz_job(
        api,
        "events",
        [
            common_pb2.IngestTask(task_id="t1", host="1", paths=["a.csv"]),
            common_pb2.IngestTask(task_id="t2", host="2", paths=["b/*.csv"]),
        ],
        snapshot_properties={"origin": "golden"},
        idempotency_key="golden-key",
    )
    job = api.service.status(api.golden_id)
    source = write_csv(tmp_path / "hosts" / "1" / "a.csv", rows(0, 25))
    table = api.catalog.load_table("demo.events")
    descriptor = write_task_manifest(job.snapshot, table, [source], "t1")
    assert descriptor is not None
    assert api.service.record_manifest(api.golden_id, "t1", descriptor, table).accepted
    api.golden_files = [
        Path(p.removeprefix("file://")) for p in [*descriptor.data_files, descriptor.manifest_path]
    ]
    api.golden_status = api.coordinator.GetJobStatus(
        coordinator_pb2.GetJobStatusRequest(job_id=api.golden_id), timeout=10
    )
    assert api.golden_status.state == common_pb2.RUNNING and api.golden_status.manifests_accepted == 1
    api.golden_keys = dump_keys(api.redis, api.golden_id)


def _without_liveness(status: common_pb2.JobStatus | None) -> common_pb2.JobStatus:
    """The status without its hosts' heartbeats (a fuzzed Heartbeat may name host 1 or 2: that changes
    their liveness, legitimately, and nothing else)."""
    assert status is not None
    copy = common_pb2.JobStatus()
    copy.CopyFrom(status)
    for host in copy.hosts:
        for name in ("live", "last_heartbeat", "concurrency"):
            host.ClearField(name)
    return copy


def check_intact(api: Api) -> None:
    """The server is up, the golden job is untouched and every job in Redis still parses.

    Every job is parsed on every check while there are a few hundred (the default run), then on
    every 20th check (FLOE_FUZZ_EXAMPLES runs make thousands).
    """
    health = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", "api.Coordinator", "api.Worker"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    status = api.coordinator.GetJobStatus(
        coordinator_pb2.GetJobStatusRequest(job_id=api.golden_id), timeout=10
    )
    assert _without_liveness(status) == _without_liveness(api.golden_status)
    assert dump_keys(api.redis, api.golden_id) == api.golden_keys
    assert all(p.exists() for p in api.golden_files), api.golden_files
    assert api.redis.get("floe:idempotency:golden-key") == api.golden_id
    assert len(list(api.outside.iterdir())) == POOL, "a file outside every table was deleted"
    api.checks += 1
    if api.redis.zcard("floe:jobs") > 300 and api.checks % 20:
        return
    parsed = 0
    for key in api.redis.scan_iter("floe:job:*", count=1000):
        match = JOB_KEY.match(key)
        if not match:
            continue
        job = api.service.store.get(match.group(1))
        assert job is not None and job.job_id == match.group(1), key
        api.service.store.tasks(job.job_id)  # every task spec parses
        for raw in api.redis.hvals(f"floe:job:{job.job_id}:manifests"):
            if raw:
                ManifestDescriptor.from_json(raw)
        parsed += 1
    assert parsed >= 1 + len(api.scratch)
    api.coordinator.ListJobs(coordinator_pb2.ListJobsRequest(limit=1000), timeout=30)


# --------------------------------------------------------------------------------------------
# calling and judging
# --------------------------------------------------------------------------------------------


def _call_once(fn: Callable[..., Any], request: Any, stream: bool, timeout: float) -> None:
    """Call ``fn`` with ``request``; a stream is read for its first reply only, then cancelled."""
    if stream:
        call = fn(request, timeout=timeout)
        try:
            next(call)
        finally:
            call.cancel()
    else:
        fn(request, timeout=timeout)


def outcome(
    fn: Callable[..., Any], request: Any, stream: bool = False, timeout: float = 30
) -> grpc.StatusCode:
    """Call ``fn``; the status code (OK on success). A stream is read for its first reply only."""
    try:
        _call_once(fn, request, stream, timeout)
    except grpc.RpcError as err:
        code, details = err.code(), err.details() or ""
        if code in BAD:
            # printed too: a failure that depends on the server's state may be reported by hypothesis
            # as flaky, without this assertion's message
            print(f"FUZZ FAILURE {type(request).__name__} -> {code.name}: {details}\n{_short(request)}")
        assert code not in BAD, (code, details, _short(request))
        assert "Traceback" not in details
        _event(request, code)
        return code  # type: ignore[no-any-return]
    _event(request, grpc.StatusCode.OK)
    return grpc.StatusCode.OK


def _event(request: Any, code: grpc.StatusCode) -> None:
    """Count outcomes per request type (pytest --hypothesis-show-statistics shows them)."""
    if currently_in_test_context():
        event(f"{type(request).__name__} -> {code.name}")


def _short(request: Any) -> str:
    return str(request)[:2000]


# --------------------------------------------------------------------------------------------
# empty, oversized and raw messages
# --------------------------------------------------------------------------------------------

METHODS: dict[str, tuple[type[Message], bool]] = {
    "/api.Coordinator/StartJob": (coordinator_pb2.StartJobRequest, False),
    "/api.Coordinator/GetJobStatus": (coordinator_pb2.GetJobStatusRequest, False),
    "/api.Coordinator/CommitJob": (coordinator_pb2.CommitJobRequest, False),
    "/api.Coordinator/ReportManifest": (coordinator_pb2.ReportManifestRequest, False),
    "/api.Coordinator/Heartbeat": (coordinator_pb2.HeartbeatRequest, False),
    "/api.Coordinator/CancelJob": (coordinator_pb2.CancelJobRequest, False),
    "/api.Coordinator/ListJobs": (coordinator_pb2.ListJobsRequest, False),
    "/api.Coordinator/WatchJob": (coordinator_pb2.WatchJobRequest, True),
    "/api.Worker/AssignTasks": (worker_pb2.AssignTasksRequest, False),
    "/api.Worker/Heartbeat": (worker_pb2.WorkerHeartbeatRequest, False),
}


def raw_call(api: Api, method: str, payload: bytes, timeout: float = 30) -> tuple[grpc.StatusCode, str]:
    """Send ``payload`` as the serialized request of ``method`` (no client-side serialization)."""
    stream = METHODS[method][1]
    factory = api.channel.unary_stream if stream else api.channel.unary_unary
    fn = factory(method, request_serializer=None, response_deserializer=None)
    try:
        _call_once(fn, payload, stream, timeout)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def decodes(method: str, payload: bytes) -> bool:
    try:
        METHODS[method][0].FromString(payload)
    except DecodeError:
        return False
    return True
