"""Floe as a contender: the real local stack (Redis, coordinator, 2 hosts, beat, Flower), up before any clock."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.client import CoordinatorClient, TaskArg
from app.proto_gen.api import common_pb2
from app.stack import LocalStack, free_port, free_port_block
from app.stack.health import proc_stats
from bench.procs import clean_env


class FloeError(RuntimeError):
    pass


_TICK = os.sysconf("SC_CLK_TCK")


def _processes(pgids: set[int]) -> dict[int, tuple[int, int, float]]:
    """pid -> (ppid, pgid, CPU seconds: user + system, plus reaped children) in these process groups."""
    return {
        pid: (int(fields[1]), int(fields[2]), sum(int(x) for x in fields[11:15]) / _TICK)
        for pid, fields in proc_stats()
        if int(fields[2]) in pgids
    }


def process_group_cpu(pgids: set[int]) -> float:
    return sum(cpu for _, _, cpu in _processes(pgids).values())


def _is_celery(pid: int) -> bool:
    try:
        return b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@dataclass
class JobResult:
    seconds: float  # StartJob sent -> COMPLETED seen
    start_rpc_seconds: float  # the StartJob call alone (reserve, record, enqueue)
    status: Any


class FloeStack:
    def __init__(self, home: Path, hosts: int = 2) -> None:
        self.home = home
        self.stack = LocalStack(
            hosts=hosts,
            home=home,
            env=clean_env(),
            coordinator_port=free_port(),
            worker_base_port=free_port_block(hosts),
            flower_port=free_port(),
        )
        self.client: CoordinatorClient | None = None

    @property
    def host_dirs(self) -> dict[str, Path]:
        return {worker_id: Path(data_dir) for worker_id, data_dir, _ in self.stack.hosts}

    def catalog_properties(self) -> dict[str, str]:
        props = dict(self.stack.settings.catalog_properties)
        props["name"] = self.stack.settings.catalog_name
        return props

    def start(self) -> FloeStack:
        self.stack.start()
        self.stack.wait_healthy(timeout=120)
        return self.start_client()

    def start_client(self) -> FloeStack:
        self.client = CoordinatorClient(self.stack.coordinator_target, timeout=120)
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        self.stack.stop()

    def run_job_sources(
        self, namespace: str, table: str, sources: list[tuple[str, list[str]]], timeout: float = 1800
    ) -> JobResult:
        """A job whose hosts plan their own files: (host, globs) per host."""
        return self.run_job(namespace, table, [], timeout, sources)

    def run_job(
        self,
        namespace: str,
        table: str,
        tasks: list[TaskArg],
        timeout: float = 1800,
        sources: list[tuple[str, list[str]]] | None = None,
    ) -> JobResult:
        assert self.client is not None
        started = time.perf_counter()
        reply = self.client.start_job(namespace, table, requester="bench", tasks=tasks, sources=sources)
        start_rpc = time.perf_counter() - started
        try:
            status = self.client.wait(reply.job_id, timeout=timeout)  # WatchJob: pushed, not polled
        except TimeoutError as exc:
            raise FloeError(str(exc)) from exc
        elapsed = time.perf_counter() - started
        if status.state != common_pb2.COMPLETED:
            raise FloeError(
                f"job {reply.job_id} ended {common_pb2.JobState.Name(status.state)}: {status.failure_reason}"
            )
        return JobResult(elapsed, start_rpc, status)

    def cpu_seconds(self) -> float:
        """User + system CPU of every process of the stack (Redis, coordinator, hosts and their pools, beat, Flower)."""
        groups = {c.pid for c in self.stack.children if c.pid}
        if self.stack.redis is not None and self.stack.redis.proc is not None:
            groups.add(self.stack.redis.proc.pid)
        return process_group_cpu(groups)

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds per role: redis, coordinator, beat, flower, host leaders, Celery consumers, pool processes."""
        names = {c.pid: c.name for c in self.stack.children if c.pid}
        redis_pid = self.stack.redis.proc.pid if self.stack.redis is not None and self.stack.redis.proc else None
        groups = set(names) | ({redis_pid} if redis_pid else set())
        procs = _processes(groups)
        out: dict[str, float] = {}
        for pid, (ppid, pgid, cpu) in procs.items():
            if pgid == redis_pid:
                role = "redis"
            elif names.get(pgid, "").startswith("host"):
                if pid == pgid:
                    role = "host: floe worker (gRPC facade)"
                elif _is_celery(ppid) and ppid in procs:
                    role = "host: celery pool processes (task bodies)"
                else:
                    role = "host: celery consumer (messages, events)"
            else:
                role = names.get(pgid, "other")
            out[role] = out.get(role, 0.0) + cpu
        return out

    def redis(self) -> Any:
        """A client of the stack's Redis (the caller closes it)."""
        import redis

        assert self.stack.redis_url is not None
        return redis.Redis.from_url(self.stack.redis_url, decode_responses=True)

    def redis_commandstats(self) -> dict[str, dict[str, float]]:
        import redis

        assert self.stack.redis_url is not None
        client = redis.Redis.from_url(self.stack.redis_url)
        try:
            return {k: dict(v) for k, v in client.info("commandstats").items()}
        finally:
            client.close()
