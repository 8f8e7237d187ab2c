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

The end of the module pins, one regression test each, the bugs this fuzzing found (a bug found
open gets a strict xfail until it is fixed).
"""

from __future__ import annotations

import base64
import json
import os
import re
import string
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.control import currently_in_test_context

from app import keys
from app.iceberg import ManifestDescriptor
from app.proto_gen.api import common_pb2, coordinator_pb2, worker_pb2
from tests.support.api_server import WORKER_ID, ApiServer, serve_api
from tests.support.tables import make_table, rows, write_csv
from workers.conversion import write_task_manifest

pytestmark = pytest.mark.integration

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


def _dump_keys(client: redis.Redis, job_id: str) -> dict[str, Any]:
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


def _start(api: Api, table: str, tasks: list[common_pb2.IngestTask], **extra: Any) -> str:
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


@pytest.fixture
def api(tmp_path: Path, redis_server: object) -> Iterator[Api]:
    with serve_api(tmp_path, redis_server.url) as server:  # type: ignore[attr-defined]
        make_table(server.catalog, "demo.events")
        scratch = make_table(server.catalog, "demo.scratch")
        sandbox = Path(scratch.location().removeprefix("file://")) / "data" / "fuzz"
        sandbox.mkdir(parents=True)
        outside = tmp_path / "outside"
        outside.mkdir()
        for i in range(POOL):
            (outside / f"pool-{i}.avro").write_text("never delete me")
        api = Api(**{f.name: getattr(server, f.name) for f in fields(ApiServer)}, sandbox=sandbox, outside=outside)
        _make_golden_job(api, tmp_path)
        api.scratch = [
            _start(api, "scratch", [common_pb2.IngestTask(task_id=f"s{i}", host="1") for i in range(3)]),
            _start(api, "scratch", []),  # waits for AssignTasks and CommitJob
            _start(api, "scratch", [common_pb2.IngestTask(task_id="c1")], auto_commit=False),
        ]
        api.coordinator.CancelJob(coordinator_pb2.CancelJobRequest(job_id=api.scratch[2]), timeout=10)
        api.refill_pool()
        yield api


def _make_golden_job(api: Api, tmp_path: Path) -> None:
    """A real job: two tasks on two hosts, task t1's files written and its manifest recorded."""
    api.golden_id = _start(
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
    api.golden_keys = _dump_keys(api.redis, api.golden_id)


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
    assert _dump_keys(api.redis, api.golden_id) == api.golden_keys
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


def outcome(
    fn: Callable[..., Any], request: Any, stream: bool = False, timeout: float = 30
) -> grpc.StatusCode:
    """Call ``fn``; the status code (OK on success). A stream is read for its first reply only."""
    try:
        if stream:
            call = fn(request, timeout=timeout)
            try:
                next(call)
            finally:
                call.cancel()
        else:
            fn(request, timeout=timeout)
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
# strategies: a valid request with a few fields fuzzed (and sometimes every field)
# --------------------------------------------------------------------------------------------

MB_STRING = "x" * (1 << 20)
SPECIAL_TEXT = [
    "", " ", "\t", "\n", "\r\n", "\x00", "\x7f", "\x1b[2J", "a\n", "a\x00b", "0" * 32, "0" * 32 + "\n",
    "F" * 32, "../etc/passwd", "/etc/passwd", "~root", "*", "**/*", ".", "..", "a.b", "a..b", " demo",
    "demo", "events", "scratch", "default", "t1", "s0", "worker-1", "1", "a" * 128, "a" * 129, "a" * 257,
    "a" * 1025, "é", "日本語", "🙂", "\u202e", "\u2028", "\ufeff", "\U0010ffff", "%s%d%n", "{}", "[]",
    "null", "${jndi:ldap://x}", "'; DROP TABLE jobs; --", "floe:job:x", "\\", "a/b", "a:b", "-a",
]  # fmt: skip
text = st.one_of(
    st.sampled_from(SPECIAL_TEXT),
    st.integers(1 << 20, 1 << 20).map(lambda n: "x" * n),  # 1 MB (a map: reprs stay short)
    st.text(max_size=40),
    st.text(st.characters(max_codepoint=0x7F), max_size=40),
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Mn"]), max_size=12),
    st.text(string.ascii_letters + string.digits + "._:-", min_size=1, max_size=130),
)
short_text = st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(max_size=40))
valid_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,15}\Z")
ids = st.one_of(valid_ids, text)
hex32 = st.text("0123456789abcdef", min_size=32, max_size=32)
INT32_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 604800, 604801, 100_000, 100_001]
INT64_EDGES = [0, 1, -1, 2**63 - 1, -(2**63), 2**53 + 1]
int32 = st.one_of(st.sampled_from(INT32_EDGES), st.integers(-(2**31), 2**31 - 1))
int64 = st.one_of(st.sampled_from(INT64_EDGES), st.integers(-(2**63), 2**63 - 1))
valid_paths = st.lists(
    st.sampled_from(["a.csv", "*.csv", "sub/**/x.parquet", "d/", "x.jsonl.gz"]), max_size=3
)
fuzz_paths = st.lists(
    st.one_of(st.sampled_from(["../x", "a/../../x", "/abs", "~/x", "a\x00b", "", "x" * 5000]), text),
    min_size=1,
    max_size=3,
)


class Fields:
    """Draws each field of one request: valid, unless it is among the few chosen to be fuzzed."""

    def __init__(self, data: st.DataObject, names: list[str]) -> None:
        self.data = data
        everything = data.draw(st.integers(0, 9)) == 0
        count = data.draw(st.sampled_from([0, 1, 1, 1, 2, 3]))
        chosen = data.draw(st.lists(st.sampled_from(names), min_size=count, max_size=count))
        self.fuzzed = set(names) if everything else set(chosen)

    def __call__(self, name: str, valid: st.SearchStrategy[Any], fuzz: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(fuzz if name in self.fuzzed else valid, label=name)


# Fuzzed requests change the server's state, so what a draw means may depend on it, but what is
# drawn must not (hypothesis checks that replaying a choice sequence draws the same shapes): state is
# looked up after the draw, e.g. an index drawn from a fixed range picks one of the scratch jobs.
def pick(items: list[str]) -> st.SearchStrategy[str]:
    """One of ``items`` (read when drawn, newest first), or "" when there are none."""
    return st.integers(0, 63).map(lambda i: items[-1 - i % len(items)] if items else "")


def scratch_job(api: Api, newest: int = 64) -> st.SearchStrategy[str]:
    return st.integers(0, newest - 1).map(lambda i: api.scratch[-1 - i % len(api.scratch)])


def job_ids(api: Api) -> st.SearchStrategy[str]:
    return st.one_of(scratch_job(api), hex32, text)


def table_refs(valid_table: str = "scratch") -> st.SearchStrategy[common_pb2.TableRef]:
    return st.builds(
        common_pb2.TableRef,
        catalog=st.one_of(st.sampled_from(["", "default"]), text),
        namespace=st.one_of(st.just("demo"), text),
        table=st.one_of(st.sampled_from([valid_table, "events"]), text),
    )


def valid_table_ref(table: str = "scratch") -> st.SearchStrategy[common_pb2.TableRef]:
    return st.sampled_from(["", "default"]).map(
        lambda catalog: common_pb2.TableRef(catalog=catalog, namespace="demo", table=table)
    )


def ingest_tasks(
    valid: bool, host: st.SearchStrategy[str], max_size: int = 4
) -> st.SearchStrategy[list[common_pb2.IngestTask]]:
    if valid:
        task = st.builds(common_pb2.IngestTask, task_id=valid_ids, host=host, paths=valid_paths)
        return st.lists(task, min_size=1, max_size=max_size, unique_by=lambda t: t.task_id)
    task = st.builds(
        common_pb2.IngestTask,
        task_id=ids,
        host=st.one_of(host, ids),
        paths=st.one_of(valid_paths, fuzz_paths),
    )
    return st.lists(task, max_size=max_size)


def optional(message: Message, name: str, value: Any) -> None:
    if value is not None:
        getattr(message, name).CopyFrom(value)


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        short_text,
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=8,
    )


def descriptor(data: st.DataObject, api: Api, job_id: str, task_id: str) -> dict[str, Any]:
    """A manifest description for ``task_id`` of ``job_id``, a few fields fuzzed (paths name the
    sandboxes' files: the coordinator deletes the files a losing report names)."""
    other_id, other_uuid = data.draw(int64), data.draw(text)
    try:
        snapshot_id, commit_uuid = api.snapshot_of(job_id)
    except Exception:  # noqa: BLE001 - not a job: any ids
        snapshot_id, commit_uuid = other_id, other_uuid
    name = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=20)
    sandboxed = st.one_of(
        st.integers(0, POOL - 1).map(lambda i: api.pool(i).as_uri()),  # exists (until a loser deletes it)
        st.integers(0, POOL - 1).map(lambda i: api.pool(i).as_uri()),
        name.map(lambda n: (api.sandbox / n).as_uri()),  # does not exist
        st.integers(0, POOL - 1).map(lambda i: (api.outside / f"pool-{i}.avro").as_uri()),  # outside
        name.map(lambda n: f"{(api.sandbox / '..' / '..' / '..' / 'x').as_uri()}{n}"),  # climbs out
        short_text.map(lambda t: f"{api.sandbox.as_uri()}/{t}"),  # anything below the sandbox
    )
    counter = st.one_of(st.integers(0, 10**6), int64, st.integers(2**53 - 2, 2**53 + 1), st.integers(-5, 0))
    bound = st.one_of(
        st.none(),
        st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode()),
        short_text,
        json_values(),
    )
    partition = st.fixed_dictionaries(
        {"contains_null": st.booleans() | json_values()},
        optional={"contains_nan": st.none() | st.booleans(), "lower_bound": bound, "upper_bound": bound},
    )
    field = Fields(
        data, ["task_id", "snapshot_id", "commit_uuid", "paths", "counts", "spec", "partitions", "metrics"]
    )
    # the valid values: the real manifest written for this task, else pool files (which exist but
    # are no manifests); what is drawn does not depend on which (see pick())
    base = api.written.get(job_id, {}).get(task_id)

    def valid(key: str, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return strategy.map(lambda drawn: base[key] if base else drawn)

    pooled = st.integers(0, POOL - 1).map(lambda i: api.pool(i).as_uri())
    out: dict[str, Any] = {
        "task_id": field("task_id", st.just(task_id), ids),
        "snapshot_id": field("snapshot_id", st.just(snapshot_id), int64),
        "commit_uuid": field("commit_uuid", st.just(commit_uuid), text),
        "manifest_path": field("paths", valid("manifest_path", pooled), sandboxed),
        "manifest_length": field("counts", valid("manifest_length", st.integers(1, 10**6)), counter),
        "partition_spec_id": field("spec", valid("partition_spec_id", st.just(0)), int32),
        "added_files_count": field("counts", valid("added_files_count", st.integers(1, 10)), counter),
        "added_rows_count": field("counts", valid("added_rows_count", st.integers(1, 10**6)), counter),
        "added_bytes": field("counts", valid("added_bytes", st.integers(1, 10**6)), counter),
        "partitions": field("partitions", valid("partitions", st.just([])), st.lists(partition, max_size=2)),
        "data_files": field(
            "paths", valid("data_files", st.lists(pooled, max_size=3)), st.lists(sandboxed, max_size=3)
        ),
    }
    metrics = st.fixed_dictionaries({"files": counter, "records": counter, "bytes": counter})
    if "metrics" in field.fuzzed:
        out["partition_metrics"] = data.draw(st.dictionaries(short_text, metrics, max_size=2))
    mutation = data.draw(st.sampled_from(["none", "none", "drop", "retype"]))
    if mutation == "drop":
        out.pop(data.draw(st.sampled_from(sorted(out))))
    elif mutation == "retype":
        out[data.draw(st.sampled_from(sorted(out)))] = data.draw(json_values())
    return out


def new_scratch_job(api: Api, data: st.DataObject) -> str:
    """A fresh open job on demo.scratch (so that reports and assignments can still be accepted), with
    a real manifest written (not recorded) for each of its tasks: the base of fuzzed descriptions."""
    tasks = data.draw(st.lists(valid_ids, min_size=1, max_size=2, unique=True), label="scratch tasks")
    job_id = _start(api, "scratch", [common_pb2.IngestTask(task_id=t, host="1") for t in tasks])
    api.scratch.append(job_id)
    table = api.catalog.load_table("demo.scratch")
    snapshot = api.service.status(job_id).snapshot
    for task_id in tasks:
        source = write_csv(api.outside.parent / "sources" / f"{job_id}-{task_id}.csv", rows(0, 3))
        written = write_task_manifest(snapshot, table, [source], task_id)
        assert written is not None
        api.written.setdefault(job_id, {})[task_id] = written.to_dict()
    return job_id


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
        api.scratch.append(_start(api, "scratch", []))  # a job waiting for AssignTasks
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
        if stream:
            call = fn(payload, timeout=timeout)
            try:
                next(call)
            finally:
                call.cancel()
        else:
            fn(payload, timeout=timeout)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def decodes(method: str, payload: bytes) -> bool:
    try:
        METHODS[method][0].FromString(payload)
    except DecodeError:
        return False
    return True


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


# --------------------------------------------------------------------------------------------
# the bugs this fuzzing found, one regression test each (fixed in 41d6c4f and by the manifest checks
# of app.jobs.manifest_checks.check_reported_manifest); a bug found open gets a strict xfail until it is fixed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(METHODS))
def test_undecodable_request_is_invalid_argument(api: Api, method: str) -> None:
    """Was INTERNAL 'Exception deserializing request!' (grpc's own deserializer failure)."""
    for payload in (b"\x0a\x10abc", b"\x0a\x04\xff\xfe\xfd\xfc"):  # truncated; invalid UTF-8 (most types)
        if decodes(method, payload):
            continue
        code, details = raw_call(api, method, payload)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (payload, code, details)
        assert "not a valid" in details and "Traceback" not in details
    check_intact(api)


@pytest.mark.parametrize("namespace", [".", "a..b", "demo.", "demo. .x"])
def test_namespace_with_an_empty_segment_is_invalid_argument(api: Api, namespace: str) -> None:
    """Was INTERNAL: pyiceberg's ValueError for an empty namespace level."""
    code = outcome(
        api.coordinator.StartJob,
        coordinator_pb2.StartJobRequest(table=common_pb2.TableRef(namespace=namespace, table="events")),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    check_intact(api)


def test_ids_with_a_trailing_newline_are_refused(api: Api) -> None:
    """Were accepted: ``^...$`` also matches before a trailing newline (queue 'host-1\\n')."""
    scratch = common_pb2.TableRef(namespace="demo", table="scratch")
    for task in (common_pb2.IngestTask(task_id="t1\n"), common_pb2.IngestTask(task_id="t1", host="1\n")):
        code = outcome(api.coordinator.StartJob, coordinator_pb2.StartJobRequest(table=scratch, tasks=[task]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, task
    code = outcome(api.coordinator.GetJobStatus, coordinator_pb2.GetJobStatusRequest(job_id="0" * 32 + "\n"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code = outcome(api.worker.Heartbeat, worker_pb2.WorkerHeartbeatRequest(worker_id=WORKER_ID + "\n"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert not any(queue.endswith("\n") for _, _, queue in api.queue.sent)


def _descriptor_for(api: Api, job_id: str, task_id: str, **changes: Any) -> str:
    """A well-formed description for ``task_id`` of ``job_id``: its manifest exists, in the table."""
    snapshot_id, commit_uuid = api.snapshot_of(job_id)
    api.refill_pool()
    data: dict[str, Any] = {
        "task_id": task_id,
        "snapshot_id": snapshot_id,
        "commit_uuid": commit_uuid,
        "manifest_path": api.pool(0).as_uri(),
        "manifest_length": 100,
        "partition_spec_id": 0,
        "added_files_count": 1,
        "added_rows_count": 10,
        "added_bytes": 100,
        "partitions": [],
        "data_files": [api.pool(1).as_uri()],
    }
    data.update(changes)
    return json.dumps(data)


def _report(api: Api, job_id: str, task_id: str, described: str) -> tuple[grpc.StatusCode, str]:
    request = coordinator_pb2.ReportManifestRequest(
        job_id=job_id, manifest=common_pb2.ManifestInfo(task_id=task_id, descriptor_json=described)
    )
    try:
        api.coordinator.ReportManifest(request, timeout=30)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("rows_count", [2**63, 2**70, -(2**63) - 1, 2**53, -1, 1.5e300, True])
def test_counts_that_are_not_counts_are_refused_atomically(api: Api, rows_count: object) -> None:
    """Was INTERNAL, half-recorded: HINCRBY past int64 failed midway through the Lua script, after
    the manifest was recorded and manifests/tasks_done bumped (rows, state and version not)."""
    job_id = api.scratch[0]
    before = _dump_keys(api.redis, job_id)
    code, details = _report(
        api, job_id, "s0", _descriptor_for(api, job_id, "s0", added_rows_count=rows_count)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert "not a valid manifest description" in details, details
    assert _dump_keys(api.redis, job_id) == before  # refused as a whole
    check_intact(api)


@pytest.mark.parametrize("key", ["snapshot_id", "added_rows_count", "manifest_length"])
def test_infinity_in_a_manifest_description_is_invalid_argument(api: Api, key: str) -> None:
    """Was INTERNAL: json.loads accepts Infinity and int(inf) raised OverflowError, for any job id."""
    described = _descriptor_for(api, api.scratch[0], "s0").replace(
        f'"{key}": ', f'"{key}": Infinity, "x": ', 1
    )
    code, details = _report(api, "f" * 32, "s0", described)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)


@pytest.mark.parametrize("bound", ["abc", 5, "!!!!"])
def test_partition_bounds_that_are_not_base64_are_refused(api: Api, bound: object) -> None:
    """Were accepted, then CommitJob failed decoding them: INTERNAL, and the job stuck in COMMITTING."""
    job_id = _start(api, "scratch", [common_pb2.IngestTask(task_id="only")], auto_commit=False)
    described = _descriptor_for(
        api, job_id, "only", partitions=[{"contains_null": False, "lower_bound": bound}]
    )
    code, details = _report(api, job_id, "only", described)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert outcome(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=job_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )


def test_a_manifest_that_does_not_exist_or_lies_outside_the_table_is_refused(api: Api) -> None:
    """Was accepted and committed: the table's snapshot then named a missing file; every read failed."""
    job_id = _start(api, "scratch", [common_pb2.IngestTask(task_id="only")], auto_commit=False)
    missing = (api.sandbox / "missing-m0.avro").as_uri()
    outside = (api.outside / "pool-0.avro").as_uri()
    for changes in (
        {"manifest_path": missing},
        {"manifest_path": outside},
        {"data_files": [outside]},
        {"data_files": [f"{api.sandbox.as_uri()}/../../../../outside/pool-1.avro"]},
    ):
        code, details = _report(api, job_id, "only", _descriptor_for(api, job_id, "only", **changes))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (changes, code, details)
    assert outcome(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=job_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    api.catalog.load_table("demo.scratch").scan().to_arrow()
    check_intact(api)


def test_a_losing_report_deletes_neither_the_winners_files_nor_files_outside_the_table(api: Api) -> None:
    """Were deleted: a losing report's data_files were deleted unchecked (the winner's included)."""
    recorded = json.loads(api.golden_keys[f"floe:job:{api.golden_id}:manifests"]["t1"])
    victim = (api.outside / "pool-2.avro").as_uri()
    evil = dict(recorded, data_files=[*recorded["data_files"], victim])
    code, _ = _report(api, api.golden_id, "t1", json.dumps(evil))
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # names a file outside the table
    # a second report for t1 naming the winner's files and a file that is not a manifest of this
    # reservation: refused, and nothing is deleted (the coordinator only deletes what this job's
    # own attempts journaled)
    other = Path(api.golden_files[-1]).with_name(f"{recorded['commit_uuid']}-other-m0.avro")
    other.write_bytes(b"a losing attempt's manifest")
    again = dict(recorded, manifest_path=other.as_uri())
    code, details = _report(api, api.golden_id, "t1", json.dumps(again))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cannot be read" in details, details
    assert other.exists()
    check_intact(api)  # the winner's files, the golden job and the outside sandbox are untouched


def _real_manifest(api: Api, job_id: str, task_id: str, first: int, count: int) -> ManifestDescriptor:
    """Convert a real CSV for ``task_id`` of ``job_id`` (on demo.scratch) and record its manifest."""
    table = api.catalog.load_table("demo.scratch")
    source = write_csv(api.outside.parent / "sources" / f"{job_id}-{task_id}.csv", rows(first, count))
    descriptor = write_task_manifest(api.service.status(job_id).snapshot, table, [source], task_id)
    assert descriptor is not None
    assert api.service.record_manifest(job_id, task_id, descriptor, table).accepted
    return descriptor


def test_a_losing_report_cannot_delete_another_jobs_committed_files(api: Api) -> None:
    committed = _start(api, "scratch", [common_pb2.IngestTask(task_id="a")], auto_commit=False)
    theirs = _real_manifest(api, committed, "a", 0, 10)
    assert outcome(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=committed)) == (
        grpc.StatusCode.OK
    )
    job_id = _start(api, "scratch", [common_pb2.IngestTask(task_id="b")], auto_commit=False)
    _real_manifest(api, job_id, "b", 10, 5)
    snapshot_id, commit_uuid = api.snapshot_of(job_id)
    # a losing report for task b naming the committed job's manifest and data files
    evil = dict(theirs.to_dict(), task_id="b", snapshot_id=snapshot_id, commit_uuid=commit_uuid)
    _report(api, job_id, "b", json.dumps(evil))
    files = [Path(p.removeprefix("file://")) for p in [*theirs.data_files, theirs.manifest_path]]
    assert all(p.exists() for p in files), "another job's committed files were deleted"
    assert len(api.catalog.load_table("demo.scratch").scan().to_arrow()) == 10


def test_another_jobs_manifest_cannot_be_committed_again(api: Api) -> None:
    committed = _start(api, "scratch", [common_pb2.IngestTask(task_id="a")], auto_commit=False)
    theirs = _real_manifest(api, committed, "a", 0, 10)
    outcome(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=committed))
    job_id = _start(api, "scratch", [common_pb2.IngestTask(task_id="x")], auto_commit=False)
    snapshot_id, commit_uuid = api.snapshot_of(job_id)
    borrowed = dict(theirs.to_dict(), task_id="x", snapshot_id=snapshot_id, commit_uuid=commit_uuid)
    code, _ = _report(api, job_id, "x", json.dumps(borrowed))
    if code == grpc.StatusCode.OK:
        outcome(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=job_id))
    ids = api.catalog.load_table("demo.scratch").scan().to_arrow().column("id").to_pylist()
    assert sorted(ids) == list(range(10)), f"{len(ids)} rows, {len(set(ids))} distinct"


@pytest.mark.parametrize("suffix", ["/", "/metadata", "/data/.."])
def test_a_directory_is_not_a_manifest(api: Api, suffix: str) -> None:
    job_id = _start(api, "scratch", [common_pb2.IngestTask(task_id="only")], auto_commit=False)
    location = api.catalog.load_table("demo.scratch").location().rstrip("/")
    code, details = _report(
        api, job_id, "only", _descriptor_for(api, job_id, "only", manifest_path=location + suffix)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
