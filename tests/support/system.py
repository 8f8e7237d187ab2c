"""A real Floe cluster for integration tests: coordinator, Celery workers per host, beat, as OS processes."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.catalog.sql import SqlCatalog

from app.client import CoordinatorClient
from app.processes import celery_worker_argv
from app.proto_gen.api import common_pb2
from app.stack import ports
from app.stack.group_process import GroupProcess as Proc

ROOT = Path(__file__).resolve().parent.parent.parent
TERMINAL = {common_pb2.COMPLETED, common_pb2.FAILED, common_pb2.CANCELLED}


def free_port() -> int:
    return ports.free_port()  # below the kernel's ephemeral range (app/stack/ports.py)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def catalog_from_env(env: dict[str, str]) -> Catalog:
    """The catalog a Floe process given ``env`` uses (ICEBERG_* and PYICEBERG_CATALOG__<NAME>__<KEY>),
    loaded here from ``env`` alone (this process's environment plays no part beyond pyiceberg's own)."""
    name = env.get("ICEBERG_CATALOG_NAME") or "default"
    seed = {"type": "ICEBERG_CATALOG_TYPE", "uri": "ICEBERG_CATALOG_URI", "warehouse": "ICEBERG_WAREHOUSE"}
    props = {key: env[var] for key, var in seed.items() if env.get(var)}
    prefix = f"PYICEBERG_CATALOG__{name.upper()}__"
    for var, value in env.items():
        if var.upper().startswith(prefix):  # as pyiceberg reads them: "__" -> ".", "_" -> "-"
            props[var[len(prefix) :].lower().replace("__", ".").replace("_", "-")] = value
    return load_catalog(name, **props)


class Cluster:
    """Processes share one Redis, one catalog and one warehouse.

    By default the catalog is SQLite with a file:// warehouse under ``home`` (what Floe's processes
    use when nothing is configured); ``catalog_env`` (ICEBERG_* / PYICEBERG_CATALOG__* variables, e.g.
    ``SeaweedFS.env()``) points every process and :attr:`catalog` at another one instead.
    """

    def __init__(
        self,
        home: Path,
        redis_url: str,
        extra_env: dict[str, str] | None = None,
        catalog_env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.redis_url = redis_url
        self.coordinator_port = free_port()
        self.metrics_port = free_port()
        self.procs: list[Proc] = []
        self.env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("ICEBERG_", "PYICEBERG_", "WORKER_"))
            },
            "FLOE_HOME": str(home),
            "REDIS_URL": redis_url,
            "COORDINATOR_ADDRESS": f"127.0.0.1:{self.coordinator_port}",
            "FLOE_WATCHDOG_INTERVAL_SECONDS": "1",
            "FLOE_METRICS_PORT": str(self.metrics_port),
            "FLOE_VISIBILITY_TIMEOUT_SECONDS": "3600",
            "FLOE_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **(catalog_env or {}),
            **(extra_env or {}),
        }
        (home / "logs").mkdir(parents=True, exist_ok=True)
        self.catalog: Catalog
        if catalog_env:
            self.catalog = catalog_from_env(catalog_env)
        else:
            self.catalog = SqlCatalog(
                "default", uri=f"sqlite:///{home / 'catalog.db'}", warehouse=(home / "warehouse").as_uri()
            )
            (home / "warehouse").mkdir(exist_ok=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.coordinator_port}"

    def client(self) -> CoordinatorClient:
        return CoordinatorClient(self.target, timeout=30)

    def metrics(self) -> dict[str, float]:
        """The coordinator's Prometheus metrics, as name{labels} -> value."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def data_dir(self, host: str) -> Path:
        path = self.home / "hosts" / host
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _proc(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, {**self.env, **(env or {})}, self.home / "logs" / f"{name}.log")
        self.procs.append(proc)
        return proc.start()

    def start_coordinator(self, name: str = "coordinator", argv: list[str] | None = None) -> Proc:
        """``floe coordinator`` (or ``argv``, e.g. ``chaos.crashing_coordinator``) on :attr:`target`."""
        proc = self._proc(name, argv or [sys.executable, "-m", "app.cli", "coordinator"])
        self.wait_healthy(self.target, "api.Coordinator", proc)
        return proc

    def start_worker(self, host: str, concurrency: int = 1, name: str | None = None) -> Proc:
        # what `floe worker` runs, under a node name unique to this cluster; mingle and gossip off
        # (they only slow a test worker's start)
        node = f"{name or 'w' + host}-{self.coordinator_port}@%h"
        argv = [*celery_worker_argv(host, concurrency, node_name=node), "--without-mingle", "--without-gossip"]
        proc = self._proc(
            name or f"worker-{host}", argv, {"WORKER_ID": host, "WORKER_DATA_BASE": str(self.data_dir(host))}
        )
        wait_until(
            lambda: "ready." in proc.output() or proc.popen.poll() is not None, 60, f"celery worker {host}"
        )  # type: ignore[union-attr]
        assert proc.popen is not None and proc.popen.poll() is None, proc.output()[-3000:]
        return proc

    def start_facade_worker(self, host: str) -> tuple[Proc, str]:
        port = free_port()
        proc = self._proc(
            f"floe-worker-{host}",
            [sys.executable, "-m", "app.cli", "worker", "--concurrency", "1"],
            {
                "WORKER_ID": host,
                "WORKER_DATA_BASE": str(self.data_dir(host)),
                "WORKER_ADDRESS": f"127.0.0.1:{port}",
            },
        )
        self.wait_healthy(f"127.0.0.1:{port}", "api.Worker", proc)
        wait_until(lambda: "ready." in proc.output(), 60, f"celery worker of floe worker {host}")
        return proc, f"127.0.0.1:{port}"

    def start_beat(self, name: str = "beat") -> Proc:
        proc = self._proc(name, [sys.executable, "-m", "app.cli", "beat"])
        wait_until(
            lambda: "beat: Starting" in proc.output() or proc.popen.poll() is not None, 60, "celery beat"
        )  # type: ignore[union-attr]
        return proc

    @staticmethod
    def wait_healthy(target: str, service: str, proc: Proc, timeout: float = 60) -> None:
        def serving() -> bool:
            assert proc.popen is not None
            if proc.popen.poll() is not None:
                raise AssertionError(
                    f"{proc.name} exited with {proc.popen.returncode}:\n{proc.output()[-3000:]}"
                )
            with grpc.insecure_channel(target) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=1
                    )
                except grpc.RpcError:
                    return False
                return reply.status == health_pb2.HealthCheckResponse.SERVING

        wait_until(serving, timeout, f"{service} at {target}", interval=0.2)

    def wait_for_state(self, job_id: str, timeout: float = 90) -> common_pb2.JobStatus:
        with self.client() as client:
            return wait_until(  # type: ignore[return-value]
                lambda: (s := client.status(job_id)).state in TERMINAL and s,
                timeout,
                f"job {job_id} to finish",
                0.2,
            )

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def json_lines(self, message: str) -> list[dict[str, Any]]:
        """The JSON log lines of every process started whose text contains ``message``."""
        return [
            json.loads(line)
            for p in self.procs
            for line in p.output().splitlines()
            if line.startswith("{") and message in line
        ]

    def handed_back(self) -> int:
        """How many tasks groups handed back as messages of their own (workers' "group handed N tasks
        back" lines; each such message has a Celery id of its own)."""
        counts = (re.search(r"handed (\d+) tasks", str(line["msg"])) for line in self.json_lines("group handed"))
        return sum(int(m[1]) for m in counts if m)

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.output()[-4000:]}" for p in self.procs)
