"""A small Python client for api.Coordinator, used by the CLI and the demo."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from app.proto_gen.api import common_pb2, coordinator_pb2, coordinator_pb2_grpc

SCHEMA_MODES = {
    "strict": common_pb2.SCHEMA_MODE_STRICT,
    "evolve": common_pb2.SCHEMA_MODE_EVOLVE,
    "ignore": common_pb2.SCHEMA_MODE_IGNORE,
}
TERMINAL_STATES = frozenset({common_pb2.COMPLETED, common_pb2.FAILED, common_pb2.CANCELLED})  # as the wire names them


@dataclass
class TaskArg:
    task_id: str
    host: str = ""
    paths: list[str] = field(default_factory=list)


class CoordinatorClient:
    def __init__(self, target: str | None = None, timeout: float = 60.0) -> None:
        from app.settings import client_connection

        default_target, security = client_connection()
        self.target = target or default_target
        self.timeout = timeout
        self.channel = security.channel(self.target)
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_job(
        self,
        namespace: str,
        table: str,
        catalog: str = "",
        requester: str = "",
        timeout_seconds: int = 0,
        tasks: list[TaskArg] | None = None,
        auto_commit: bool | None = None,
        properties: dict[str, str] | None = None,
        idempotency_key: str = "",
        sources: list[tuple[str, list[str]]] | None = None,
        schema_mode: str = "",
    ) -> coordinator_pb2.StartJobResponse:
        """``schema_mode``: strict, evolve or ignore; "" lets the table's floe.schema-mode decide."""
        request = coordinator_pb2.StartJobRequest(
            table=common_pb2.TableRef(catalog=catalog, namespace=namespace, table=table),
            requester=requester,
            job_timeout_seconds=timeout_seconds,
            tasks=[common_pb2.IngestTask(task_id=t.task_id, host=t.host, paths=t.paths) for t in tasks or []],
            snapshot_properties=properties or {},
            idempotency_key=idempotency_key,
            sources=[common_pb2.HostSource(host=host, paths=globs) for host, globs in sources or []],
            schema_mode=SCHEMA_MODES[schema_mode.lower()] if schema_mode else common_pb2.SCHEMA_MODE_UNSPECIFIED,
        )
        if auto_commit is not None:
            request.auto_commit = auto_commit
        return self.stub.StartJob(request, timeout=self.timeout)

    def status(self, job_id: str) -> common_pb2.JobStatus:
        return self.stub.GetJobStatus(
            coordinator_pb2.GetJobStatusRequest(job_id=job_id), timeout=self.timeout
        )

    def commit(self, job_id: str) -> coordinator_pb2.CommitJobResponse:
        return self.stub.CommitJob(coordinator_pb2.CommitJobRequest(job_id=job_id), timeout=self.timeout)

    def cancel(self, job_id: str, reason: str = "") -> common_pb2.JobStatus:
        return self.stub.CancelJob(
            coordinator_pb2.CancelJobRequest(job_id=job_id, reason=reason), timeout=self.timeout
        )

    def list(self, limit: int = 20, states: Sequence[Any] | None = None) -> list[common_pb2.JobStatus]:
        reply = self.stub.ListJobs(
            coordinator_pb2.ListJobsRequest(limit=limit, states=states or []), timeout=self.timeout
        )
        return list(reply.jobs)

    def hosts(self) -> Sequence[common_pb2.HostStatus]:
        """Hosts whose worker heartbeat within the last hour: live, last heartbeat, concurrency."""
        return list(self.stub.ListHosts(coordinator_pb2.ListHostsRequest(), timeout=self.timeout).hosts)

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[common_pb2.JobStatus]:
        yield from self.stub.WatchJob(coordinator_pb2.WatchJobRequest(job_id=job_id), timeout=timeout)

    def wait(self, job_id: str, timeout: float | None = None, poll_seconds: float = 1.0) -> common_pb2.JobStatus:
        """Block until the job finishes and return its final status.

        Follows WatchJob (the coordinator pushes every change); if the coordinator has no watch
        slot free, or the stream breaks, it polls GetJobStatus every ``poll_seconds`` instead.
        ``timeout`` bounds the whole wait (TimeoutError when it runs out).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        status = None
        try:
            for status in self.watch(job_id, timeout=timeout):
                if status.state in TERMINAL_STATES:
                    return status
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f}s") from exc
            if exc.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
                raise
        while True:
            status = self.status(job_id)
            if status.state in TERMINAL_STATES:
                return status
            if deadline is not None and time.monotonic() + poll_seconds > deadline:
                raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f}s")
            time.sleep(poll_seconds)
