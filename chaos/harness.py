"""A Floe cluster whose worker hosts are real network namespaces, with the faults the matrix needs.

Root namespace: redis-server (listening on 127.0.0.1 and the hosts' gateway address), the coordinator
(on the gateway address), beat, the test's own clients. Each host: ``celery -A app.celery_app worker
-Q host-<id>,control`` inside ``floe-<run>-<id>`` with its own ``WORKER_DATA_BASE``, reaching Redis
over its veth link. The catalog and warehouse are the topology's (chaos/topology.py): SQLite and a
file warehouse on the shared filesystem, or SeaweedFS's S3 and REST catalog listening on the gateway.

Faults: :meth:`Cluster.kill` (SIGKILL a process group), :meth:`Cluster.cut` / :meth:`Cluster.restore`
(a host's link), :meth:`ChaosRedis.kill` / ``restart`` (Redis, AOF on, ``appendfsync everysec``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from app.client import CoordinatorClient
from app.jobs.model import Job, JobState
from app.jobs.store import JobStore
from app.processes import celery_worker_argv
from app.stack import RedisProcess, find_redis_server, free_port
from app.stack.group_process import GroupProcess as Proc
from chaos.netns import Host, Network
from chaos.proxies import CatalogProxy
from chaos.topology import CURRENT, Backend, backend_for

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
TERMINAL = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class ChaosError(AssertionError):
    """A case's expectation did not hold (carries what was seen)."""


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; ChaosError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
        except (ConnectionError, OSError) as exc:  # e.g. Redis restarting
            value, last_error = None, exc  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            suffix = f" (last error: {last_error})" if last_error else ""
            raise ChaosError(f"timed out after {timeout:.0f}s waiting for {what}{suffix}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------


class ChaosRedis(RedisProcess):
    """app.stack's redis-server (AOF, ``appendfsync everysec``), also listening on the hosts' gateway.

    :func:`app.stack.start_redis` binds 127.0.0.1 only and takes no bind address, so the harness starts
    the same server with one more ``--bind`` address; protected mode is off because the hosts are
    not loopback clients (the server listens on the private bridge only, never on eth0).
    """

    def __init__(self, data_dir: Path, port: int, extra_binds: list[str]) -> None:
        super().__init__(find_redis_server(), data_dir, port, appendonly=True, password=None)
        self.extra_binds = extra_binds

    def argv(self) -> list[str]:
        argv = super().argv()
        at = argv.index("--bind") + 2  # after the --bind 127.0.0.1 pair: more values of the same option
        return [*argv[:at], *self.extra_binds, *argv[at:], "--protected-mode", "no"]

    def url_on(self, address: str) -> str:
        return f"redis://{address}:{self.port}/0"


# --------------------------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------------------------


class Cluster:
    """Redis + coordinator + beat in the root namespace, one namespace per worker host.

    ``backend``: the catalog and warehouse (default: the current topology's, see chaos/topology.py);
    ``catalog_proxy``: on s3-rest, every Floe process reaches the REST catalog through a
    :class:`~chaos.proxies.CatalogProxy` (:attr:`proxy`) that a case can turn against it.
    Use as a context manager: everything (processes, namespaces, veths, Redis, the catalog's servers)
    is gone on exit.
    """

    def __init__(
        self,
        home: Path,
        env: dict[str, str] | None = None,
        backend: str | None = None,
        catalog_proxy: bool = False,
    ) -> None:
        self.home = home.absolute()
        self.extra_env = env or {}
        self.network = Network()
        self.redis: ChaosRedis | None = None
        self.procs: list[Proc] = []
        self.coordinator: Proc | None = None
        self.coordinator_port = 0
        self.backend: Backend = backend_for(backend or CURRENT.get(), proxy=catalog_proxy)
        self._catalog: Catalog | None = None
        self._store: JobStore | None = None
        self._redis_client: redis.Redis | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> None:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        (self.home / "warehouse").mkdir(exist_ok=True)
        self.network.open()
        self.redis = ChaosRedis(self.home / "redis", free_port(), [self.network.gateway])
        self.redis.data_dir.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self.backend.start(self.home, self.network.gateway)
        self._catalog = self.backend.catalog()
        self.catalog.create_namespace("chaos")

    def close(self) -> None:
        for proc in self.procs:  # SIGTERM all at once, then wait, then SIGKILL what is left
            if proc.alive:
                proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            if proc.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            proc.kill()
        with contextlib.suppress(Exception):
            self.backend.close()  # before the network: SeaweedFS listens on the bridge
        self.network.close()  # also kills anything still running inside a namespace
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
        if self._redis_client is not None:
            with contextlib.suppress(Exception):
                self._redis_client.close()
        if self.redis is not None:
            self.redis.stop()
        if isinstance(self._catalog, SqlCatalog):
            self._catalog.engine.dispose()

    # -- environment -----------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        """The cluster's catalog, as the test sees it (directly, never through the proxy)."""
        assert self._catalog is not None, "the cluster is not started"
        return self._catalog

    def new_catalog(self) -> Catalog:
        """Another client of the cluster's catalog (for a writer of the test's own)."""
        return self.backend.catalog()

    @property
    def proxy(self) -> CatalogProxy:
        proxy = getattr(self.backend, "proxy", None)
        assert proxy is not None, "this cluster has no catalog proxy (Cluster(catalog_proxy=True), s3-rest)"
        return proxy

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    def base_env(self) -> dict[str, str]:
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ICEBERG_", "PYICEBERG_", "WORKER_", "FLOE_", "REDIS_", "COORDINATOR_"))
        }
        return {
            **keep,
            "FLOE_HOME": str(self.home),
            "REDIS_URL": self.redis_url,
            "COORDINATOR_ADDRESS": f"{self.network.gateway}:{self.coordinator_port or 50051}",
            "FLOE_WATCHDOG_INTERVAL_SECONDS": "1",
            "FLOE_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **self.backend.env(),
            **self.extra_env,
        }

    def _proc(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, {**self.base_env(), **(env or {})}, self.home / "logs" / f"{name}.log")
        self.procs.append(proc)
        return proc.start()

    def data_dir(self, host_id: int) -> Path:
        path = self.home / "hosts" / str(host_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- processes -------------------------------------------------------------------------------

    @property
    def target(self) -> str:
        return f"{self.network.gateway}:{self.coordinator_port}"

    def start_coordinator(self, name: str = "coordinator", argv: list[str] | None = None) -> Proc:
        """``floe coordinator`` on the gateway address (the same port across restarts)."""
        if not self.coordinator_port:
            self.coordinator_port = free_port(self.network.gateway)
        proc = self._proc(name, argv or [sys.executable, "-m", "app.cli", "coordinator"])
        self.coordinator = proc
        wait_until(lambda: self._serving(proc), 60, f"{name} at {self.target}", interval=0.1)
        return proc

    def _serving(self, proc: Proc) -> bool:
        if not proc.alive:
            raise ChaosError(f"{proc.name} exited:\n{proc.output()[-3000:]}")
        with grpc.insecure_channel(self.target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="api.Coordinator"), timeout=1
                )
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def add_host(self, host_id: int) -> Host:
        self.data_dir(host_id)
        return self.network.add_host(host_id)

    def start_worker(self, host_id: int, name: str | None = None, wait: bool = True) -> Proc:
        """``celery worker -Q host-<id>,control`` inside host ``host_id``'s namespace."""
        host = self.add_host(host_id)
        assert self.redis is not None
        name = name or f"worker-{host_id}"
        node = f"{name}-{self.network.run}@%h"
        argv = host.exec_argv(
            [*celery_worker_argv(str(host_id), 1, node_name=node), "--without-mingle", "--without-gossip"]
        )
        proc = self._proc(
            name,
            argv,
            {
                "WORKER_ID": str(host_id),
                "WORKER_DATA_BASE": str(self.data_dir(host_id)),
                "REDIS_URL": self.redis.url_on(self.network.gateway),
            },
        )
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, *procs: Proc) -> None:
        for proc in procs:

            def ready(p: Proc = proc) -> bool:
                if not p.alive:
                    raise ChaosError(f"{p.name} exited:\n{p.output()[-3000:]}")
                return " ready." in p.output()

            wait_until(ready, 90, f"celery worker {proc.name}", interval=0.1)

    def start_workers(self, host_ids: list[int]) -> list[Proc]:
        procs = [self.start_worker(h, wait=False) for h in host_ids]
        self.wait_ready(*procs)
        return procs

    def start_beat(self, name: str = "beat") -> Proc:
        proc = self._proc(name, [sys.executable, "-m", "app.cli", "beat"])

        def started() -> bool:
            if not proc.alive:
                raise ChaosError(f"{name} exited:\n{proc.output()[-3000:]}")
            return "beat: Starting" in proc.output()

        wait_until(started, 60, name, interval=0.1)
        return proc

    def probe_from_host(self, host_id: int) -> None:
        """The host reaches Redis and the coordinator over its link (as a separate machine would)."""
        assert self.redis is not None
        host = self.network.hosts[host_id]
        code = (
            "import redis, sys; from app.stack import grpc_serving;"
            f"redis.Redis.from_url({self.redis.url_on(self.network.gateway)!r}, socket_timeout=3).ping();"
            f"sys.exit(0 if grpc_serving({self.target!r}, 'api.Coordinator', 3) else 3)"
        )
        out = subprocess.run(
            host.exec_argv([sys.executable, "-c", code]), cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        if out.returncode != 0:
            raise ChaosError(f"host {host_id} cannot reach Redis/coordinator: {out.stderr[-2000:]}")

    # -- faults ----------------------------------------------------------------------------------

    def cut(self, host_id: int) -> None:
        self.network.cut(host_id)

    def restore(self, host_id: int) -> None:
        self.network.restore(host_id)

    # -- state -----------------------------------------------------------------------------------

    @property
    def store(self) -> JobStore:
        if self._store is None:
            self._store = JobStore.from_url(self.redis_url, 7 * 24 * 3600)
        return self._store

    @property
    def redis_client(self) -> redis.Redis:
        """The test's own Redis connection, for what a case inspects or breaks on purpose."""
        if self._redis_client is None:
            self._redis_client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        return self._redis_client

    def client(self) -> CoordinatorClient:
        return CoordinatorClient(self.target, timeout=30)

    @contextlib.contextmanager
    def connected(self) -> Iterator[CoordinatorClient]:
        client = self.client()
        try:
            yield client
        finally:
            client.close()

    def job(self, job_id: str) -> Job:
        return self.store.require(job_id)

    def wait_job(self, job_id: str, timeout: float = 120, states: tuple[JobState, ...] = TERMINAL) -> Job:
        """Wait (reading Redis, so it works while the coordinator is down) for a state in ``states``."""

        def reached() -> Job | None:
            job = self.store.get(job_id)
            return job if job is not None and job.state in states else None

        try:
            job = wait_until(reached, timeout, f"job {job_id} to reach {[s.value for s in states]}", 0.1)
            assert job is not None
            return job
        except ChaosError as exc:
            job = self.store.get(job_id)
            raise ChaosError(f"{exc}; job is {job.summary() if job else None}\n{self.logs()}") from None

    def logs(self, tail: int = 3000) -> str:
        """The end of every process's log, without beat's periodic ticks (the noise of a stall)."""
        noise = ("floe.watchdog", "floe.autocommit", "Sending due task")
        out = []
        for proc in self.procs:
            lines = [line for line in proc.output().splitlines() if not any(n in line for n in noise)]
            out.append(f"===== {proc.name} ({proc.log})\n" + "\n".join(lines)[-tail:])
        if backend_log := self.backend.log():
            out.append(f"===== {self.backend.name}\n" + backend_log[-tail:])
        return "\n".join(out)

    def table(self, name: str = "events") -> Table:
        return self.catalog.load_table(f"chaos.{name}")
