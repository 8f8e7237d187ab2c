"""The api.Worker gRPC facade: AssignTasks registers tasks with the job and enqueues them on this
host's queue (repeats are harmless in every job state: known tasks are acknowledged, not run again);
Heartbeat reports this worker's liveness."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from app.errors import InvalidArgument
from app.grpc.convert import table_from_proto, tasks_from_proto
from app.jobs.service import JobService
from app.jobs.validation import check_id, check_job_id
from app.proto_gen.api import common_pb2, worker_pb2, worker_pb2_grpc


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    def __init__(self, service: JobService, worker_id: str) -> None:
        self.service = service
        self.worker_id = worker_id

    def _check_worker(self, worker_id: str) -> None:
        check_id(worker_id, "worker_id")
        if worker_id != self.worker_id:
            raise InvalidArgument(f"worker_id={worker_id!r} does not name this worker ({self.worker_id!r})")

    def AssignTasks(
        self, request: worker_pb2.AssignTasksRequest, context: grpc.ServicerContext
    ) -> worker_pb2.AssignTasksResponse:
        self._check_worker(request.worker_id)
        job_id = check_job_id(request.job_id)
        for i, task in enumerate(request.tasks):
            if task.host and task.host != self.worker_id:
                raise InvalidArgument(
                    f"tasks[{i}].host={task.host!r}: this worker runs tasks for host {self.worker_id!r}"
                )
        assignment = self.service.assign_tasks(
            job_id,
            self.worker_id,
            tasks_from_proto(request.tasks),
            request.snapshot.snapshot_id if request.HasField("snapshot") else 0,
            request.snapshot.commit_uuid if request.HasField("snapshot") else "",
            table_from_proto(request.table, request.HasField("table")),
        )
        return worker_pb2.AssignTasksResponse(
            worker_id=self.worker_id,
            job_id=job_id,
            accepted_task_ids=assignment.accepted,
            already_assigned_task_ids=assignment.already,
            recorded_manifests=assignment.recorded_manifests,
            job_state=common_pb2.JobState.Value(assignment.state),
        )

    def Heartbeat(
        self, request: worker_pb2.WorkerHeartbeatRequest, context: grpc.ServicerContext
    ) -> worker_pb2.WorkerHeartbeatResponse:
        self._check_worker(request.worker_id)
        self.service.heartbeat(self.worker_id)
        now = Timestamp()
        now.GetCurrentTime()
        return worker_pb2.WorkerHeartbeatResponse(
            worker_id=self.worker_id,
            server_time=now,
            active_tasks=self.service.open_tasks_on_host(self.worker_id),
        )
