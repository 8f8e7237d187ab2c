"""The production topology: Floe on S3 object storage and an Iceberg REST catalog (SeaweedFS)."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.fs
import pytest
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.exceptions import OAuthError

from app.client import CoordinatorClient, TaskArg
from app.proto_gen.api import common_pb2
from app.stack import free_port, free_port_block
from tests.support.catalogs import CatalogHandle
from tests.support.s3_objects import assert_all_on_s3, objects, s3
from tests.support.seaweedfs import SeaweedFS
from tests.support.system import TERMINAL, Cluster, wait_until
from tests.support.tables import make_table, read_ids, rows, write_csv, write_parquet

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# the topology itself, with pyiceberg alone
# --------------------------------------------------------------------------------------------


def test_pyiceberg_round_trip_through_rest_catalog_on_s3(
    seaweedfs: SeaweedFS,
    s3_rest_catalog: CatalogHandle,
) -> None:
    # Given the REST catalog (a RestCatalog, not a SQL one) with its warehouse in the S3 bucket
    catalog = s3_rest_catalog.catalog
    assert isinstance(catalog, RestCatalog)
    table = make_table(catalog, s3_rest_catalog.identifier("events"), partitioned=True)
    # When rows are appended twice through pyiceberg
    arrow_schema = table.schema().as_arrow()
    table.append(pa.Table.from_pylist(rows(0, 300), schema=arrow_schema))
    table.append(pa.Table.from_pylist(rows(300, 200), schema=arrow_schema))
    # Then a fresh catalog client reads every row back, from objects in the bucket
    reloaded = seaweedfs.catalog("again").load_table(s3_rest_catalog.identifier("events"))
    assert read_ids(reloaded) == list(range(500))
    assert len(reloaded.metadata.snapshots) == 2
    assert_all_on_s3(seaweedfs, reloaded)
    assert reloaded.location() == f"{seaweedfs.warehouse}/{s3_rest_catalog.namespace}/events"


def test_s3_checks_signatures_and_the_catalog_checks_credentials(seaweedfs: SeaweedFS) -> None:
    from pyiceberg.catalog import load_catalog

    assert s3(seaweedfs).get_file_info(seaweedfs.bucket).type == pyarrow.fs.FileType.Directory
    with pytest.raises(OSError, match="ACCESS_DENIED|AccessDenied|SignatureDoesNotMatch"):
        s3(seaweedfs, secret_key="not-the-secret").get_file_info(seaweedfs.bucket)
    with pytest.raises(OAuthError):
        load_catalog(
            "wrong", **{**seaweedfs.catalog_properties, "credential": f"{seaweedfs.access_key}:nope"}
        )


def test_object_store_killed_and_restarted_keeps_its_data(
    seaweedfs: SeaweedFS,
    s3_rest_catalog: CatalogHandle,
) -> None:
    table = make_table(s3_rest_catalog.catalog, s3_rest_catalog.identifier("events"))
    table.append(pa.Table.from_pylist(rows(0, 100), schema=table.schema().as_arrow()))
    ports = dict(seaweedfs.ports)
    # Given the object store and catalog die as a crash would, and come back
    seaweedfs.kill()
    assert not seaweedfs.alive
    seaweedfs.restart()
    assert seaweedfs.ports == ports and seaweedfs.alive
    # Then what was committed is there, and the table takes new commits
    table = seaweedfs.catalog().load_table(s3_rest_catalog.identifier("events"))
    assert read_ids(table) == list(range(100))
    table.append(pa.Table.from_pylist(rows(100, 50), schema=table.schema().as_arrow()))
    # and a graceful restart keeps them too
    seaweedfs.restart()
    table = seaweedfs.catalog().load_table(s3_rest_catalog.identifier("events"))
    assert read_ids(table) == list(range(150))
    assert_all_on_s3(seaweedfs, table)


def test_a_first_start_whose_picked_port_was_taken_meanwhile_picks_new_ports(tmp_path: Path) -> None:
    server = SeaweedFS(tmp_path / "seaweedfs")
    taken = server.ports["admin"]
    with socket.socket() as squatter:  # another process took a port between picking and binding
        squatter.bind((server.host, taken))
        squatter.listen()
        try:
            server.start()
            assert server.alive and server.ports["admin"] != taken
            assert "Port allocation failed" in server.log()  # the first attempt met the taken port
        finally:
            server.close()


def test_env_describes_the_catalog_for_floe_processes(seaweedfs: SeaweedFS) -> None:
    from app.settings import Settings
    from tests.support.system import catalog_from_env

    env = seaweedfs.env("prod")
    settings = Settings.from_env(env)
    assert settings.catalog_name == "prod"
    assert settings.catalog_properties == {
        "type": "rest",
        "uri": seaweedfs.catalog_uri,
        "warehouse": f"s3://{seaweedfs.bucket}",
    }
    assert env["PYICEBERG_CATALOG__PROD__S3__ENDPOINT"] == seaweedfs.s3_endpoint
    assert env["PYICEBERG_CATALOG__PROD__S3__SECRET_ACCESS_KEY"] == seaweedfs.secret_key
    catalog = catalog_from_env(env)
    assert isinstance(catalog, RestCatalog) and catalog.name == "prod"
    for key, value in seaweedfs.catalog_properties.items():
        assert catalog.properties[key] == value, key
    with pytest.raises(ValueError):
        seaweedfs.env("my_catalog")  # pyiceberg would read it back as "my-catalog"


# --------------------------------------------------------------------------------------------
# Floe on that topology
# --------------------------------------------------------------------------------------------


@pytest.fixture
def s3_cluster(tmp_path: Path, redis_server: object, seaweedfs: SeaweedFS) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "floe", redis_server.url, catalog_env=seaweedfs.env())  # type: ignore[attr-defined]
    assert isinstance(cluster.catalog, RestCatalog)
    cluster.catalog.create_namespace("demo")
    try:
        yield cluster
    finally:
        cluster.stop_all()


def test_cancelled_job_deletes_its_files_from_s3(s3_cluster: Cluster, seaweedfs: SeaweedFS) -> None:
    cluster = s3_cluster
    table = make_table(cluster.catalog, "demo.events")
    write_csv(cluster.data_dir("1") / "a.csv", rows(0, 30))
    cluster.start_coordinator()
    cluster.start_worker("1")
    with cluster.client() as client:
        # host 9 has no worker: the job waits after host 1's manifest, its files in the bucket
        reply = client.start_job(
            "demo", "events", tasks=[TaskArg("t1", "1", ["a.csv"]), TaskArg("t9", "9", ["x.csv"])]
        )
        wait_until(lambda: client.status(reply.job_id).manifests_accepted == 1, 60, "host 1's manifest")
        written = objects(seaweedfs, table.location())
        assert any(o.endswith(".parquet") for o in written), sorted(written)
        assert not any(o.endswith("-m0.avro") for o in written), sorted(written)  # its manifest is kept inline
        cancelled = client.cancel(reply.job_id, "changed my mind")
        assert cancelled.state == common_pb2.CANCELLED, cluster.logs()
    # Then what the job wrote is deleted from the bucket (the table's metadata stays)
    left = objects(seaweedfs, table.location())
    assert not {o for o in left if o.endswith((".parquet", ".avro"))}, (sorted(left), cluster.logs())
    assert seaweedfs.catalog().load_table("demo.events").current_snapshot() is None


# --------------------------------------------------------------------------------------------
# `floe up` on that topology
# --------------------------------------------------------------------------------------------


def _processes_mentioning(marker: str) -> list[int]:
    needle = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for name in ("cmdline", "environ"):
            try:
                if needle in (entry / name).read_bytes():
                    found.append(int(entry.name))
                    break
            except OSError:
                continue
    return found


def test_floe_up_runs_a_two_host_job_on_s3_and_the_rest_catalog(
    tmp_path: Path,
    seaweedfs: SeaweedFS,
) -> None:
    home = tmp_path / "floe-home"
    coordinator_port, worker_port = free_port(), free_port_block(2)
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("REDIS_URL", "WORKER_", "ICEBERG_", "PYICEBERG_", "FLOWER_"))
        },
        "FLOE_HOME": str(home),
        "FLOE_WORKER_CONCURRENCY": "1",
        "PYTHONUNBUFFERED": "1",
        "COORDINATOR_ADDRESS": f":{coordinator_port}",
        "WORKER_ADDRESS": f":{worker_port}",
        **seaweedfs.env(),
    }
    catalog = seaweedfs.catalog()
    catalog.create_namespace("demo")
    make_table(catalog, "demo.events", partitioned=True)
    write_csv(home / "hosts" / "1" / "a.csv", rows(0, 300))
    write_parquet(home / "hosts" / "2" / "b.parquet", rows(300, 200))
    floe = Path(sys.executable).parent / "floe"
    argv = [str(floe), "up", "--hosts", "2", "--flower-port", str(free_port())]
    up = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(line.rstrip("\n") for line in up.stdout), daemon=True
    )  # type: ignore[union-attr]
    reader.start()
    try:
        wait_until(
            lambda: any("Healthy" in line for line in lines) or up.poll() is not None, 120, "floe up healthy"
        )
        assert up.poll() is None, "\n".join(lines)
        with CoordinatorClient(f"127.0.0.1:{coordinator_port}", timeout=30) as client:
            reply = client.start_job(
                "demo", "events", tasks=[TaskArg("t1", "1", ["a.csv"]), TaskArg("t2", "2", ["b.parquet"])]
            )
            status = wait_until(
                lambda: (s := client.status(reply.job_id)).state in TERMINAL and s, 90, "the job", 0.2
            )
        logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in (home / "logs").glob("*.log"))
        assert status.state == common_pb2.COMPLETED, (status, logs)  # type: ignore[union-attr]
        table = seaweedfs.catalog("reader").load_table("demo.events")
        assert read_ids(table) == list(range(500)) and len(table.metadata.snapshots) == 1
        assert_all_on_s3(seaweedfs, table)
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0, "\n".join(lines)
    except grpc.RpcError as exc:
        raise AssertionError(f"{exc}\n" + "\n".join(lines)) from exc
    finally:
        if up.poll() is None:
            up.kill()
        up.wait()
        reader.join(timeout=10)
        assert up.stdout is not None
        up.stdout.close()
        # never leave the stack's processes behind (they run in their own sessions)
        deadline = time.monotonic() + 10
        while (left := _processes_mentioning(str(home))) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert "Stopped." in "\n".join(lines)


# --------------------------------------------------------------------------------------------
# a REST catalog that is briefly unavailable
# --------------------------------------------------------------------------------------------


class _FlakyCatalogProxy:
    """Forwards HTTP to the REST catalog; :meth:`fail_next` makes matching requests answer 503."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.failures: list[tuple[str, str, int]] = []  # (method, path suffix, how many)
        self.failed: list[str] = []
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail_next(self, method: str, path_suffix: str, count: int = 1) -> None:
        with self.lock:
            self.failures.append((method, path_suffix, count))

    def _should_fail(self, method: str, path: str) -> bool:
        with self.lock:
            for i, (m, suffix, count) in enumerate(self.failures):
                if m == method and path.split("?")[0].endswith(suffix) and count > 0:
                    self.failures[i] = (m, suffix, count - 1)
                    self.failed.append(f"{method} {path}")
                    return True
        return False

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self) -> None:
                if proxy._should_fail(self.command, self.path):
                    body = b'{"error": {"message": "try again", "type": "ServiceUnavailable", "code": 503}}'
                    self._reply(503, [("Content-Type", "application/json")], body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                request = urllib.request.Request(
                    proxy.upstream + self.path,
                    data=self.rfile.read(length) if length else None,
                    method=self.command,
                    headers={
                        k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                    },
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        self._reply(response.status, list(response.headers.items()), response.read())
                except urllib.error.HTTPError as exc:
                    with exc:
                        self._reply(exc.code, list(exc.headers.items()), exc.read())

            do_GET = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *_args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def test_rest_catalog_briefly_unavailable_while_a_worker_loads_the_table_is_retried(
    tmp_path: Path,
    redis_server: object,
    seaweedfs: SeaweedFS,
) -> None:
    proxy = _FlakyCatalogProxy(seaweedfs.catalog_uri)
    env = {**seaweedfs.env(), "ICEBERG_CATALOG_URI": proxy.uri}
    cluster = Cluster(tmp_path / "floe", redis_server.url, catalog_env=env)  # type: ignore[attr-defined]
    try:
        cluster.catalog.create_namespace("demo")
        make_table(cluster.catalog, "demo.events")
        write_csv(cluster.data_dir("1") / "a.csv", rows(0, 100))
        cluster.start_coordinator()
        with cluster.client() as client:
            reply = client.start_job("demo", "events", tasks=[TaskArg("t1", "1", ["a.csv"])])
        # Given the catalog answers the worker's first load of the table with 503 (a rollout, throttling)
        proxy.fail_next("GET", "/namespaces/demo/tables/events")
        cluster.start_worker("1")
        status = cluster.wait_for_state(reply.job_id, timeout=120)
        assert proxy.failed, "the worker never loaded the table through the proxy"
        # Then the task is retried like any other transient failure, and the job completes
        assert status.state == common_pb2.COMPLETED, status.failure_reason
        assert read_ids(seaweedfs.catalog().load_table("demo.events")) == list(range(100))
    finally:
        cluster.stop_all()
        proxy.close()
