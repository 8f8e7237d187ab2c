"""Secrets never leak: a real cluster runs jobs with every kind of secret set, then every sink is searched.

The secrets: the bearer token (``FLOE_AUTH_TOKEN``, coordinator and client), the Redis password (a
password-protected redis-server; ``REDIS_URL=redis://:<password>@…`` in every process), catalog
credentials (``PYICEBERG_CATALOG__DEFAULT__S3__ACCESS_KEY_ID`` / ``__SECRET_ACCESS_KEY``: accepted
by pyiceberg, unused by the SQLite catalog and its file:// warehouse) and Flower's basic-auth
password (``FLOWER_BASIC_AUTH``).

The run: a job to COMPLETED, a job whose task reads a corrupt source (FAILED), and refused
requests (bad input, unknown table and catalog, a table whose metadata file is gone, a missing and
a wrong token).
The sinks: every process log, every gRPC reply (``MessageToJson``) and error detail, every Redis
key and value (Floe's and Celery's), Flower's pages and API (task arguments included), the
coordinator's /metrics, every file the cluster wrote (catalog, warehouse, logs), the command
lines of the running processes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from google.protobuf.json_format import MessageToJson

from app.client import CoordinatorClient, TaskArg
from app.proto_gen.api import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from app.stack import RedisProcess, start_redis
from tests.support.system import ROOT, Cluster, Proc, free_port, wait_until
from tests.support.tables import make_table, read_ids, rows, write_csv

pytestmark = pytest.mark.integration

TOKEN = "tok-3f9a1c2e7b5d4e6f8a0b1c2d3e4f5a6b"
REDIS_PASSWORD = "rpw-8c1d/e2f:a3b@c4d%e5f!"  # URL-special characters: it is quoted in REDIS_URL
S3_ACCESS_KEY_ID = "AKIAFLOESECRETTEST77"
S3_SECRET_ACCESS_KEY = "s3sk-0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c"
FLOWER_USER, FLOWER_PASSWORD = "floe", "fpw-5e4d3c2b1a09f8e7d6c5"


def needles() -> dict[str, bytes]:
    """Each secret in every form it could take on the way out."""
    forms: dict[str, bytes] = {}
    for name, secret in {
        "token": TOKEN,
        "redis password": REDIS_PASSWORD,
        "s3 access key id": S3_ACCESS_KEY_ID,
        "s3 secret access key": S3_SECRET_ACCESS_KEY,
        "flower password": FLOWER_PASSWORD,
    }.items():
        forms[name] = secret.encode()
        if (quoted := urllib.parse.quote(secret, safe="")) != secret:
            forms[f"{name} (url-quoted)"] = quoted.encode()
    basic = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode())
    forms["flower basic-auth header"] = basic
    return forms


def leaks(haystack: str | bytes) -> list[str]:
    data = haystack.encode(errors="surrogateescape") if isinstance(haystack, str) else haystack
    return [name for name, needle in needles().items() if needle in data]


def assert_no_secret(sources: dict[str, str | bytes]) -> None:
    found = {where: names for where, text in sources.items() if (names := leaks(text))}
    assert not found, f"secrets found: {found}"


@dataclass
class Run:
    """Everything the scenario produced, for the tests below to search."""

    home: Path
    redis_dir: Path
    completed: common_pb2.JobStatus | None = None
    failed: common_pb2.JobStatus | None = None
    replies: dict[str, str] = field(default_factory=dict)  # what -> MessageToJson
    errors: dict[str, tuple[grpc.StatusCode, str]] = field(default_factory=dict)  # what -> (code, details)
    redis_dump: dict[str, str] = field(default_factory=dict)
    flower: dict[str, bytes] = field(default_factory=dict)  # path -> body
    flower_tasks: dict[str, Any] = field(default_factory=dict)
    metrics: str = ""
    cmdlines: dict[str, bytes] = field(default_factory=dict)
    environ_secrets: dict[str, list[str]] = field(default_factory=dict)  # process -> secrets it was given
    logs: dict[str, bytes] = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)


def _dump_redis(client: redis.Redis) -> dict[str, str]:
    dump: dict[str, str] = {}
    for key in client.scan_iter("*", count=1000):
        kind = client.type(key)
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(client.smembers(key))  # type: ignore[arg-type]
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = f"<{kind}>"
        dump[key] = json.dumps(value, default=str)
    return dump


def _flower_get(port: int, path: str, auth: bool = True) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        basic = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except urllib.error.URLError:
        return 0, b""  # not listening (yet)


def _cmdlines(procs: list[Proc]) -> dict[str, bytes]:
    """The command line of every process in each cluster process's session (pool children too)."""
    sessions = {
        os.getsid(p.popen.pid): p.name for p in procs if p.popen is not None and p.popen.poll() is None
    }
    out: dict[str, bytes] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            sid = os.getsid(int(entry.name))
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ProcessLookupError):
            continue
        if sid in sessions:
            out[f"{sessions[sid]} pid {entry.name}"] = cmdline.replace(b"\0", b" ")
    return out


def _call(run: Run, what: str, fn: Callable[..., Any], request: Any, stream: bool = False) -> Any:
    """Call an RPC, keeping its reply (as JSON) or its error (code and details) for the search."""
    try:
        if stream:
            replies = list(fn(request, timeout=60))
            for i, reply in enumerate(replies):
                run.replies[f"{what}[{i}]"] = MessageToJson(reply)
            return replies
        reply = fn(request, timeout=60)
    except grpc.RpcError as err:
        run.errors[what] = (err.code(), err.details() or "")
        return None
    run.replies[what] = MessageToJson(reply)
    return reply


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    redis_dir = tmp_path_factory.mktemp("redis-secret")
    server: RedisProcess = start_redis(redis_dir, password=REDIS_PASSWORD)
    home = tmp_path_factory.mktemp("secrets") / "floe"
    result = Run(home, redis_dir)
    cluster = Cluster(
        home,
        server.url,
        {
            "FLOE_AUTH_TOKEN": TOKEN,
            "ICEBERG_CATALOG_TYPE": "sql",
            "ICEBERG_CATALOG_URI": f"sqlite:///{home / 'catalog.db'}",
            "ICEBERG_WAREHOUSE": (home / "warehouse").as_uri(),
            "PYICEBERG_CATALOG__DEFAULT__S3__ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
            "PYICEBERG_CATALOG__DEFAULT__S3__SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY,
            "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}",
            "FLOE_LOG_LEVEL": "DEBUG",  # the most a log can say
        },
    )
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FLOE_AUTH_TOKEN", TOKEN)  # app.client.CoordinatorClient reads it
            _scenario(cluster, result)
        yield result
    finally:
        cluster.stop_all()
        server.stop()


def _scenario(cluster: Cluster, run: Run) -> None:
    cluster.catalog.create_namespace("demo")
    make_table(cluster.catalog, "demo.events", partitioned=True)
    broken = make_table(cluster.catalog, "demo.broken")  # its metadata file deleted: a server-side error
    Path(broken.metadata_location.removeprefix("file://")).unlink()
    write_csv(cluster.data_dir("1") / "a.csv", rows(0, 60))
    write_csv(cluster.data_dir("2") / "b.csv", rows(60, 40))
    (cluster.data_dir("2") / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    cluster.start_coordinator()
    cluster.start_worker("1")
    cluster.start_worker("2")
    cluster.start_beat()
    flower_port = free_port()
    flower = cluster._proc("flower", [sys.executable, "-m", "app.cli", "flower", f"--port={flower_port}"])
    wait_until(
        lambda: (
            flower.popen is not None
            and (flower.popen.poll() is not None or _flower_get(flower_port, "/api/workers")[0] == 200)
        ),
        60,
        "flower",
        0.5,
    )
    assert flower.popen is not None and flower.popen.poll() is None, flower.output()[-3000:]
    time.sleep(2)  # Flower's event consumer connects after its web server is up

    with CoordinatorClient(cluster.target, timeout=60) as client:
        stub = client.stub
        # a job that completes, driven and watched through every read RPC
        start = client.start_job(
            "demo",
            "events",
            requester="secret-test",
            tasks=[TaskArg("t1", "1", ["a.csv"]), TaskArg("t2", "2", ["b.csv"])],
            idempotency_key="secret-test-1",
        )
        run.replies["StartJob"] = MessageToJson(start)
        run.completed = cluster.wait_for_state(start.job_id)
        get = coordinator_pb2.GetJobStatusRequest(job_id=start.job_id)
        _call(run, "GetJobStatus", stub.GetJobStatus, get)
        _call(run, "WatchJob", stub.WatchJob, coordinator_pb2.WatchJobRequest(job_id=start.job_id), True)
        _call(run, "CommitJob (again)", stub.CommitJob, coordinator_pb2.CommitJobRequest(job_id=start.job_id))
        # a job whose task reads a corrupt source: FAILED with the file named
        bad = client.start_job("demo", "events", tasks=[TaskArg("bad", "2", ["corrupt.parquet"])])
        run.replies["StartJob (bad source)"] = MessageToJson(bad)
        run.failed = cluster.wait_for_state(bad.job_id)
        _call(
            run,
            "GetJobStatus (failed)",
            stub.GetJobStatus,
            coordinator_pb2.GetJobStatusRequest(job_id=bad.job_id),
        )
        # a job cancelled on the way
        pending = client.start_job("demo", "events", tasks=[TaskArg("never", "9", ["x.csv"])])
        _call(run, "CancelJob", stub.CancelJob, coordinator_pb2.CancelJobRequest(job_id=pending.job_id))
        _call(run, "ListJobs", stub.ListJobs, coordinator_pb2.ListJobsRequest(limit=100))
        _call(
            run,
            "Heartbeat",
            stub.Heartbeat,
            coordinator_pb2.HeartbeatRequest(worker_id="w1", job_id=start.job_id),
        )
        # refused requests: each error's details are searched too
        table = common_pb2.TableRef
        for what, request in {
            "StartJob (no table)": coordinator_pb2.StartJobRequest(),
            "StartJob (unknown table)": coordinator_pb2.StartJobRequest(
                table=table(namespace="demo", table="nope")
            ),
            "StartJob (unknown catalog)": coordinator_pb2.StartJobRequest(
                table=table(catalog="elsewhere", namespace="demo", table="events")
            ),
            "StartJob (empty namespace level)": coordinator_pb2.StartJobRequest(
                table=table(namespace=".", table="x")
            ),
            "StartJob (table metadata gone)": coordinator_pb2.StartJobRequest(
                table=table(namespace="demo", table="broken")
            ),
            "StartJob (bad task)": coordinator_pb2.StartJobRequest(
                table=table(namespace="demo", table="events"), tasks=[common_pb2.IngestTask(task_id="../x")]
            ),
        }.items():
            _call(run, what, stub.StartJob, request)
        _call(
            run, "GetJobStatus (bad id)", stub.GetJobStatus, coordinator_pb2.GetJobStatusRequest(job_id="x")
        )
        _call(
            run,
            "CommitJob (failed job)",
            stub.CommitJob,
            coordinator_pb2.CommitJobRequest(job_id=bad.job_id),
        )
    # no token, and a wrong one
    with grpc.insecure_channel(cluster.target) as channel:
        plain = coordinator_pb2_grpc.CoordinatorStub(channel)
        _call(run, "GetJobStatus (no token)", plain.GetJobStatus, get)
        wrong = [("authorization", f"Bearer {TOKEN[:-4]}XXXX")]
        try:
            plain.GetJobStatus(get, timeout=30, metadata=wrong)
        except grpc.RpcError as err:
            run.errors["GetJobStatus (wrong token)"] = (err.code(), err.details() or "")

    # the CLI, with the token from the environment
    cli = subprocess.run(
        [sys.executable, "-m", "app.cli", "job", "status", start.job_id],
        env={**cluster.env, "FLOE_COORDINATOR": cluster.target},
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    run.replies["floe job status (stdout+stderr)"] = (cli.stdout + cli.stderr).decode(errors="replace")
    run.replies["floe job status (exit code)"] = str(cli.returncode)

    # Flower: pages and API, once it has seen the tasks
    def flower_saw_tasks() -> bool:
        status, body = _flower_get(flower_port, "/api/tasks")
        return status == 200 and len(json.loads(body)) >= 3

    wait_until(flower_saw_tasks, 60, "Flower to see the ingest tasks", 0.5)
    for path in ("/", "/tasks", "/broker", "/api/tasks", "/api/workers?refresh=1"):
        status, body = _flower_get(flower_port, path)
        run.flower[path] = body
        assert status == 200, (path, status, body[:500])
    run.flower_tasks = json.loads(run.flower["/api/tasks"])
    workers = json.loads(run.flower["/api/workers?refresh=1"])
    pages = [f"/api/task/info/{u}" for u in run.flower_tasks] + [f"/task/{u}" for u in run.flower_tasks]
    pages += [f"/worker/{urllib.parse.quote(name)}" for name in workers]
    for path in pages:
        status, body = _flower_get(flower_port, path)
        run.flower[path] = body
        assert status == 200, (path, status, body[:500])
    status, body = _flower_get(flower_port, "/api/tasks", auth=False)
    assert status == 401, "Flower answered without basic auth"

    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.metrics_port}/metrics", timeout=10) as response:
        run.metrics = response.read().decode()
    client = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    try:
        run.redis_dump = _dump_redis(client)
    finally:
        client.close()
    run.cmdlines = _cmdlines(cluster.procs)
    for proc in cluster.procs:
        if proc.popen is not None and proc.popen.poll() is None:
            run.environ_secrets[proc.name] = leaks(Path(f"/proc/{proc.popen.pid}/environ").read_bytes())
    run.rows = read_ids(cluster.catalog.load_table("demo.events"))
    cluster.stop_all()  # flush and close every log before they are read
    run.logs = {p.name: p.log.read_bytes() for p in cluster.procs if p.log.exists()}


# --------------------------------------------------------------------------------------------
# the scenario happened
# --------------------------------------------------------------------------------------------


def test_the_jobs_ran_as_intended(run: Run) -> None:
    assert run.completed is not None and run.completed.state == common_pb2.COMPLETED
    assert run.rows == list(range(100))
    assert run.failed is not None and run.failed.state == common_pb2.FAILED
    assert "corrupt.parquet" in run.failed.failure_reason
    codes = {what: code for what, (code, _) in run.errors.items()}
    assert codes["GetJobStatus (no token)"] == grpc.StatusCode.UNAUTHENTICATED
    assert codes["GetJobStatus (wrong token)"] == grpc.StatusCode.UNAUTHENTICATED
    assert codes["StartJob (no table)"] == grpc.StatusCode.INVALID_ARGUMENT
    assert codes["StartJob (unknown table)"] == grpc.StatusCode.NOT_FOUND
    assert codes["StartJob (unknown catalog)"] == grpc.StatusCode.NOT_FOUND
    assert codes["StartJob (bad task)"] == grpc.StatusCode.INVALID_ARGUMENT
    assert codes["CommitJob (failed job)"] == grpc.StatusCode.FAILED_PRECONDITION
    assert run.replies["floe job status (exit code)"] == "0", run.replies["floe job status (stdout+stderr)"]
    # the secrets were really there: every process was given them, and the search finds them
    for name in ("coordinator", "worker-1", "worker-2", "beat", "flower"):
        assert {"redis password (url-quoted)", "token", "s3 secret access key"} <= set(
            run.environ_secrets[name]
        ), (name, run.environ_secrets[name])
    assert "redis password" in leaks((run.redis_dir / "redis-auth.conf").read_bytes())
    # every sink was actually filled
    assert {"coordinator", "worker-1", "worker-2", "beat", "flower"} <= set(run.logs)
    assert all(run.logs[name] for name in ("coordinator", "worker-1", "worker-2"))
    assert any(key.startswith("floe:job:") for key in run.redis_dump)
    ingest = [t for t in run.flower_tasks.values() if t.get("name") == "floe.ingest"]
    assert len(ingest) >= 3 and all(t.get("args") for t in ingest), run.flower_tasks


# --------------------------------------------------------------------------------------------
# no secret anywhere
# --------------------------------------------------------------------------------------------


def test_no_secret_in_any_log(run: Run) -> None:
    assert_no_secret({f"{name}.log": text for name, text in run.logs.items()})


def test_no_secret_in_any_reply_or_error(run: Run) -> None:
    assert_no_secret(dict(run.replies))
    assert_no_secret({what: f"{code.name}: {details}" for what, (code, details) in run.errors.items()})
    # and an error on the server's side says nothing but a reference (the log has the rest)
    code, details = run.errors["StartJob (table metadata gone)"]
    assert code not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN), (code, details)
    if code == grpc.StatusCode.INTERNAL:
        assert re.fullmatch(r"internal error \(ref [0-9a-f]+\); the server log has the details", details)


def test_no_secret_in_redis(run: Run) -> None:
    assert_no_secret({f"key {key}": f"{key} = {value}" for key, value in run.redis_dump.items()})


def test_no_secret_in_flower(run: Run) -> None:
    assert_no_secret(dict(run.flower))
    for task in run.flower_tasks.values():
        assert_no_secret({f"task {task.get('uuid')} args": f"{task.get('args')} {task.get('kwargs')}"})


def test_no_secret_in_metrics_or_files(run: Run) -> None:
    assert_no_secret({"/metrics": run.metrics})
    files: dict[str, str | bytes] = {}
    for root in (run.home, run.redis_dir):
        for path in root.rglob("*"):
            # redis-auth.conf holds the Redis password by design (0600, off the command line)
            if path.is_file() and path.name != "redis-auth.conf":
                files[str(path)] = path.read_bytes()
    assert any(p.endswith("catalog.db") for p in files) and any(p.endswith(".parquet") for p in files)
    assert_no_secret(files)


def test_the_redis_password_file_is_private(run: Run) -> None:
    conf = run.redis_dir / "redis-auth.conf"
    assert conf.stat().st_mode & 0o077 == 0


def test_no_secret_on_any_command_line(run: Run) -> None:
    assert any(name.startswith("coordinator") for name in run.cmdlines), run.cmdlines
    assert_no_secret(dict(run.cmdlines))
