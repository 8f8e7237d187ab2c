"""Translating between the generated proto messages and the domain model."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from app.errors import InvalidArgument
from app.iceberg import DistributedSnapshot
from app.jobs.model import HostInfo, HostProgress, HostSource, Job, JobState, TableRef, TaskSpec
from app.jobs.task_batch import TaskBatch
from app.proto_gen.api import common_pb2

STATE_TO_PROTO = {
    JobState.PENDING: common_pb2.PENDING,
    JobState.RUNNING: common_pb2.RUNNING,
    JobState.COMMITTING: common_pb2.COMMITTING,
    JobState.COMPLETED: common_pb2.COMPLETED,
    JobState.FAILED: common_pb2.FAILED,
    JobState.CANCELLED: common_pb2.CANCELLED,
}
PROTO_TO_STATE = {v: k for k, v in STATE_TO_PROTO.items()}
SCHEMA_MODE_TO_PROTO = {
    "strict": common_pb2.SCHEMA_MODE_STRICT,
    "evolve": common_pb2.SCHEMA_MODE_EVOLVE,
    "ignore": common_pb2.SCHEMA_MODE_IGNORE,
}
# UNSPECIFIED: the table's floe.schema-mode decides (strict when unset)
PROTO_TO_SCHEMA_MODE = {common_pb2.SCHEMA_MODE_UNSPECIFIED: "", **{v: k for k, v in SCHEMA_MODE_TO_PROTO.items()}}


def schema_mode_from_proto(value: int) -> str:
    if value not in PROTO_TO_SCHEMA_MODE:
        raise InvalidArgument(
            f"schema_mode={value} is not a SchemaMode (SCHEMA_MODE_STRICT, SCHEMA_MODE_EVOLVE, SCHEMA_MODE_IGNORE)"
        )
    return PROTO_TO_SCHEMA_MODE[value]  # type: ignore[index]


def table_from_proto(msg: common_pb2.TableRef, present: bool = True) -> TableRef | None:
    if not present:
        return None
    return TableRef(msg.catalog, msg.namespace, msg.table)


def table_to_proto(ref: TableRef) -> common_pb2.TableRef:
    return common_pb2.TableRef(catalog=ref.catalog, namespace=ref.namespace, table=ref.table)


def sources_from_proto(sources: object) -> list[HostSource]:
    return [HostSource(s.host, tuple(s.paths)) for s in sources]  # type: ignore[attr-defined]


def tasks_from_proto(tasks: object) -> list[TaskSpec]:
    return [TaskSpec(t.task_id, t.host, tuple(t.paths)) for t in tasks]  # type: ignore[attr-defined]


def task_batch_from_proto(tasks: object) -> TaskBatch:
    """StartJob's tasks as columns (no Python object per task: 10,000 tasks in a few milliseconds)."""
    listed = list(tasks)  # type: ignore[call-overload]
    return TaskBatch([t.task_id for t in listed], [t.host for t in listed], [t.paths for t in listed])


def snapshot_to_proto(snap: DistributedSnapshot) -> common_pb2.DistributedSnapshot:
    return common_pb2.DistributedSnapshot(
        snapshot_id=snap.snapshot_id,
        commit_uuid=snap.commit_uuid,
        parent_snapshot_id=snap.parent_snapshot_id or 0,
        has_parent=snap.parent_snapshot_id is not None,
        table_uuid=snap.table_uuid,
        format_version=snap.format_version,
        schema_id=snap.schema_id,
        spec_id=snap.spec_id,
        metadata_location=snap.metadata_location,
    )


def _ts(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def job_to_proto(job: Job, hosts: list[tuple[HostProgress, HostInfo, bool]] | None = None) -> common_pb2.JobStatus:
    """The job's status; with ``hosts``, each host's plan, task counts and liveness too."""
    return common_pb2.JobStatus(
        job_id=job.job_id,
        state=STATE_TO_PROTO[job.state],
        table=table_to_proto(job.table),
        snapshot=snapshot_to_proto(job.snapshot),
        requester=job.requester,
        manifests_accepted=job.manifests_accepted,
        expected_manifests=job.expected,
        tasks_total=job.tasks_total,
        tasks_done=job.tasks_done,
        tasks_failed=job.tasks_failed,
        rows_written=job.rows_written,
        bytes_written=job.bytes_written,
        files_written=job.files_written,
        created_at=_ts(job.created_at),
        last_progress_at=_ts(job.last_progress_at),
        deadline=_ts(job.deadline if not job.state.terminal else None),
        ready_to_commit=job.ready_to_commit,
        committed_snapshot_id=job.committed_snapshot_id or 0,
        failure_reason=job.failure_reason,
        job_timeout_seconds=job.job_timeout_seconds,
        auto_commit=job.auto_commit,
        finished_at=_ts(job.finished_at),
        planning=job.planning,
        hosts=[host_progress_to_proto(p, info, live) for p, info, live in hosts or []],
        schema_mode=SCHEMA_MODE_TO_PROTO.get(job.schema_mode, common_pb2.SCHEMA_MODE_UNSPECIFIED),
    )


def host_progress_to_proto(progress: HostProgress, info: HostInfo, live: bool) -> common_pb2.HostStatus:
    plan = progress.plan
    return common_pb2.HostStatus(
        host=progress.host,
        planning=progress.planning,
        planned_files=plan.files if plan else 0,
        planned_bytes=plan.bytes if plan else 0,
        plan_note=plan.note if plan else "",
        tasks_total=progress.tasks_total,
        tasks_queued=progress.tasks_queued,
        tasks_running=progress.tasks_running,
        tasks_done=progress.tasks_done,
        tasks_failed=progress.tasks_failed,
        live=live,
        last_heartbeat=_ts(info.last_heartbeat),
        concurrency=info.concurrency,
    )


def host_to_proto(host: HostInfo, live: bool) -> common_pb2.HostStatus:
    return common_pb2.HostStatus(
        host=host.host, live=live, last_heartbeat=_ts(host.last_heartbeat), concurrency=host.concurrency
    )
