"""Health checks of the stack's processes: a gRPC server's ``grpc.health.v1`` status, the Celery
workers answering a ping on the broker (and the node-name prefix of a host's worker), and
waiting until every process of a set of process groups is gone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path


def grpc_serving(target: str, service: str = "", timeout: float = 1.0) -> bool:
    """True when ``target``'s grpc.health.v1 check for ``service`` answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def celery_pongs(redis_url: str, timeout: float = 1.0) -> list[str]:
    """The names of the Celery workers answering ``control.ping`` on the broker at ``redis_url``.

    A Celery app of its own is used: ``app.celery_app.app`` publishes control messages through
    the producer pool of the broker it was configured with at import, whatever connection one
    passes, so pinging a stack whose Redis was chosen later must not go through it.
    """
    from celery import Celery

    celery = Celery("floe-stack-probe", broker=redis_url, set_as_current=False)
    try:
        replies = celery.control.ping(timeout=timeout)
    finally:
        celery.close()
    return sorted(name for reply in replies or [] for name in reply)


def celery_worker_name_prefix(worker_id: str) -> str:
    """The start of the node name `floe worker` gives its Celery worker (``floe-<id>@<host>``)."""
    return f"floe-{worker_id}@"


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after "(comm)") for every process that can be read.

    The fields start: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
    stime cutime cstime ...
    """
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        yield int(entry.name), fields


def _group_has_live_members(pgid: int) -> bool:
    """True while a non-zombie process is in process group ``pgid``."""
    if not Path("/proc").is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return any(int(fields[2]) == pgid and fields[0] != "Z" for _, fields in proc_stats())


def _wait_groups_gone(pgids: list[int], deadline: float) -> None:
    pending = set(pgids)
    while pending:
        pending = {pgid for pgid in pending if _group_has_live_members(pgid)}
        if not pending or time.monotonic() >= deadline:
            return
        time.sleep(0.05)
