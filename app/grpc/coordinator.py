"""The api.Coordinator servicer: proto in, one service call, proto out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from app.errors import InvalidArgument, NotFound, ResourceExhausted
from app.grpc.convert import (
    PROTO_TO_STATE,
    host_to_proto,
    job_to_proto,
    schema_mode_from_proto,
    snapshot_to_proto,
    sources_from_proto,
    table_from_proto,
    task_batch_from_proto,
)
from app.iceberg import ManifestDescriptor
from app.jobs.events import JobEvents
from app.jobs.model import JobState
from app.jobs.service import JobService
from app.jobs.validation import StartJobInput, check_id, check_job_id
from app.proto_gen.api import common_pb2, coordinator_pb2, coordinator_pb2_grpc

# A watcher re-reads the job at least this often, in case a change notification was lost.
WATCH_FALLBACK_SECONDS = 2.0
# ... and pushes at most one update per this interval while the job runs (progress, not a change log)
WATCH_MIN_INTERVAL_SECONDS = 0.1
ENDED = {state.value for state in JobState if state.terminal}
# Each WatchJob stream holds one of the server's threads while it waits: at most this many at once,
# so watchers can never starve the other RPCs of threads.
DEFAULT_MAX_WATCHES = 16


def _after_rpc(context: grpc.ServicerContext, fn: Callable[[], None]) -> None:
    """Run ``fn`` once the RPC has ended (its answer sent), or now if it has already."""
    if not context.add_callback(fn):
        fn()


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, service: JobService, max_watches: int = DEFAULT_MAX_WATCHES) -> None:
        self.service = service
        self.events = JobEvents(service.store)
        self.max_watches = max_watches
        self._watch_slots = threading.BoundedSemaphore(max_watches)

    def close(self) -> None:
        """Stop the job-change listener (WatchJob streams then fall back to re-reading)."""
        self.events.close()

    def StartJob(
        self, request: coordinator_pb2.StartJobRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.StartJobResponse:
        job, created = self.service.start_job(
            StartJobInput(
                table=table_from_proto(request.table, request.HasField("table")),
                requester=request.requester,
                job_timeout_seconds=request.job_timeout_seconds,
                tasks=task_batch_from_proto(request.tasks),
                expected_manifest_count=request.expected_manifest_count,
                auto_commit=request.auto_commit if request.HasField("auto_commit") else None,
                snapshot_properties=dict(request.snapshot_properties),
                idempotency_key=request.idempotency_key,
                sources=sources_from_proto(request.sources),
                schema_mode=schema_mode_from_proto(request.schema_mode),
            ),
            after_answer=lambda publish: _after_rpc(context, publish),
        )
        return coordinator_pb2.StartJobResponse(
            job_id=job.job_id,
            snapshot=snapshot_to_proto(job.snapshot),
            status=job_to_proto(job),
            created=created,
        )

    def GetJobStatus(
        self, request: coordinator_pb2.GetJobStatusRequest, context: grpc.ServicerContext
    ) -> common_pb2.JobStatus:
        try:
            job = self.service.status(request.job_id)
            return job_to_proto(job, self.service.hosts_of(job))
        except NotFound:
            # The job's keys expired after the retention period; its commit stays findable.
            snapshot_id = self.service.store.committed_snapshot(request.job_id)
            if snapshot_id is None:
                raise
            return common_pb2.JobStatus(
                job_id=request.job_id, state=common_pb2.COMPLETED, committed_snapshot_id=snapshot_id
            )

    def CommitJob(
        self, request: coordinator_pb2.CommitJobRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.CommitJobResponse:
        job, already = self.service.commit(check_job_id(request.job_id))
        return coordinator_pb2.CommitJobResponse(
            job_id=job.job_id,
            snapshot_id=job.committed_snapshot_id or 0,
            status=job_to_proto(job),
            already_committed=already,
        )

    def ReportManifest(
        self, request: coordinator_pb2.ReportManifestRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.ReportManifestResponse:
        job_id = check_job_id(request.job_id)
        if not request.HasField("manifest"):
            raise InvalidArgument("manifest is required ({task_id, manifest_path, descriptor_json})")
        info = request.manifest
        task_id = check_id(info.task_id, "manifest.task_id")
        if request.worker_id:
            check_id(request.worker_id, "worker_id")
        descriptor = ManifestDescriptor.from_json(info.descriptor_json) if info.descriptor_json else None
        if descriptor is None and info.manifest_path:
            # A report naming a manifest without its description: only a repeat can be acknowledged.
            job = self.service.status(job_id)
            recorded = self.service.store.manifest(job_id, task_id)
            if not job.state.terminal and recorded is None:
                raise InvalidArgument("manifest.descriptor_json is required to record a new manifest")
            return coordinator_pb2.ReportManifestResponse(
                accepted=False,
                duplicate=True,
                message=f"acknowledged and ignored: job is {job.state.value}"
                + ("" if recorded is None else f" and task {task_id} is already recorded"),
                status=job_to_proto(job),
            )
        result = self.service.record_manifest(job_id, task_id, descriptor)
        job = self.service.status(job_id)
        messages = {
            "accepted": f"manifest for task {task_id} accepted ({job.manifests_accepted}/{job.expected})",
            "duplicate": f"task {task_id} already has a manifest; this report was acknowledged and ignored",
            "late": f"acknowledged and ignored: job is {result.detail}",
        }
        return coordinator_pb2.ReportManifestResponse(
            accepted=result.accepted,
            duplicate=result.status in ("duplicate", "late"),
            message=messages.get(result.status, result.status),
            status=job_to_proto(job),
        )

    def Heartbeat(
        self, request: coordinator_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.HeartbeatResponse:
        worker_id = check_id(request.worker_id, "worker_id")
        active = self.service.heartbeat(worker_id, request.job_id)
        now = Timestamp()
        now.GetCurrentTime()
        return coordinator_pb2.HeartbeatResponse(server_time=now, job_active=active)

    def CancelJob(
        self, request: coordinator_pb2.CancelJobRequest, context: grpc.ServicerContext
    ) -> common_pb2.JobStatus:
        if len(request.reason) > 1024:
            raise InvalidArgument("reason is longer than 1024 characters")
        return job_to_proto(self.service.cancel(check_job_id(request.job_id), request.reason))

    def ListJobs(
        self, request: coordinator_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.ListJobsResponse:
        states = set()
        for value in request.states:
            if value not in PROTO_TO_STATE:
                raise InvalidArgument(f"states contains {value}, which is not a job state")
            states.add(PROTO_TO_STATE[value])
        jobs = self.service.list_jobs(request.limit, states or None)
        return coordinator_pb2.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs])

    def ListHosts(
        self, request: coordinator_pb2.ListHostsRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.ListHostsResponse:
        return coordinator_pb2.ListHostsResponse(
            hosts=[host_to_proto(host, live) for host, live in self.service.list_hosts()]
        )

    def WatchJob(
        self, request: coordinator_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.JobStatus]:
        """The job's status now, then again on every change, until it finishes (pushed, not polled)."""
        job = self.service.status(request.job_id)
        if not self._watch_slots.acquire(blocking=False):
            raise ResourceExhausted(
                f"{self.max_watches} WatchJob streams are open on this coordinator; "
                "close one or poll GetJobStatus instead"
            )
        try:
            with self.events.watch(job.job_id) as watch:
                job = self.service.status(job.job_id)  # re-read: a change may precede the watch
                yield job_to_proto(job, self.service.hosts_of(job))
                version, sent = job.version, time.monotonic()
                while not job.state.terminal and context.is_active():
                    watch.wait(WATCH_FALLBACK_SECONDS)
                    # a burst of changes (a manifest every few ms) goes out as one update per
                    # WATCH_MIN_INTERVAL_SECONDS, read once at its end; the job's end goes out at once
                    while (pause := sent + WATCH_MIN_INTERVAL_SECONDS - time.monotonic()) > 0:
                        if watch.wait(pause) and watch.state in ENDED:
                            break
                    job = self.service.status(job.job_id)
                    if job.version != version:
                        version, sent = job.version, time.monotonic()
                        yield job_to_proto(job, self.service.hosts_of(job))
        finally:
            self._watch_slots.release()
