"""The gRPC API as ``floe coordinator`` serves it, for tests of the gRPC edge and the job service.

``create_server`` (error interceptor, health, reflection, message limits) with the real servicers of
``api.Coordinator`` and ``api.Worker`` over a real :class:`JobService`, a real redis-server and a
real SQLite catalog (namespace ``demo``). Only the Celery queue is a recorder: no workers are
needed to refuse bad input (tests/test_system.py runs the real queue).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf.json_format import Parse
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from app.catalog import load_table
from app.errors import NotFound
from app.grpc.coordinator import CoordinatorServicer
from app.grpc.server import create_server
from app.jobs.model import TableRef
from app.jobs.service import JobService
from app.jobs.store import JobStore
from app.proto_gen.api import coordinator_pb2, coordinator_pb2_grpc, worker_pb2_grpc
from app.security import TransportSecurity
from tests.support.recording_queue import RecordingQueue
from workers.facade import WorkerServicer

WORKER_ID = "worker-1"


@dataclass
class ApiServer:
    channel: grpc.Channel
    coordinator: coordinator_pb2_grpc.CoordinatorStub
    worker: worker_pb2_grpc.WorkerStub
    catalog: SqlCatalog
    queue: RecordingQueue
    service: JobService
    coordinator_servicer: CoordinatorServicer
    redis: redis.Redis
    target: str


@contextmanager
def serve_api(
    tmp_path: Path, redis_url: str, before_load: Callable[[TableRef], None] | None = None
) -> Iterator[ApiServer]:
    """Serve the API on a free port over a flushed Redis database and a fresh catalog.

    The catalog answers only to the names ``default`` and ``""``; ``before_load`` sees every table
    reference the service loads (a test may raise from it).
    """
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    catalog = SqlCatalog("default", uri=f"sqlite:///{tmp_path}/c.db", warehouse=(tmp_path / "wh").as_uri())
    catalog.create_namespace("demo")
    queue = RecordingQueue()

    def loader(ref: TableRef) -> Table:
        if ref.catalog not in ("", "default"):
            raise NotFound(f"catalog {ref.catalog!r} is not configured here")
        if before_load is not None:
            before_load(ref)
        return load_table(catalog, ref.namespace, ref.table)

    service = JobService(JobStore(client, 3600), queue, loader)
    coordinator = CoordinatorServicer(service)

    def reg_coordinator(server: grpc.Server) -> str:
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(coordinator, server)
        return "api.Coordinator"

    def reg_worker(server: grpc.Server) -> str:
        worker_pb2_grpc.add_WorkerServicer_to_server(WorkerServicer(service, WORKER_ID), server)
        return "api.Worker"

    server, port = create_server("127.0.0.1:0", [reg_coordinator, reg_worker], security=TransportSecurity())
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield ApiServer(
            channel,
            coordinator_pb2_grpc.CoordinatorStub(channel),
            worker_pb2_grpc.WorkerStub(channel),
            catalog,
            queue,
            service,
            coordinator,
            client,
            f"127.0.0.1:{port}",
        )
    finally:
        channel.close()
        server.stop(0).wait()
        coordinator.close()
        client.close()


Api = ApiServer


def _explode(ref: TableRef) -> None:
    if ref.table == "explode":
        raise RuntimeError("secret internal detail")


@pytest.fixture
def api(tmp_path: Path, redis_server: object) -> Iterator[Api]:
    with serve_api(tmp_path, redis_server.url, before_load=_explode) as server:  # type: ignore[attr-defined]
        yield server


def call_fails(fn: object, request: object, code: grpc.StatusCode, pattern: str) -> str:
    with pytest.raises(grpc.RpcError) as info:
        result = fn(request, timeout=10)  # type: ignore[operator]
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)
    err = info.value
    assert err.code() == code, (err.code(), err.details())
    details = err.details() or ""
    assert re.search(pattern, details), details
    assert "Traceback" not in details
    return details


def start_request(**data: object) -> coordinator_pb2.StartJobRequest:
    base = {"table": {"catalog": "default", "namespace": "demo", "table": "events"}, "requester": "t"}
    base.update(data)  # type: ignore[arg-type]
    return Parse(json.dumps(base), coordinator_pb2.StartJobRequest())
