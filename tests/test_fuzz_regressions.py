"""The bugs tests/test_fuzz.py found, one regression test each (fixed in 41d6c4f and by the manifest
checks of app.jobs.manifest_checks.check_reported_manifest); a bug found open gets a strict xfail until
it is fixed. Same server, golden job and judge as the fuzz tests (tests/support/fuzz_server.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from app.iceberg import ManifestDescriptor
from app.proto_gen.api import common_pb2, coordinator_pb2, worker_pb2
from tests.support.api_server import WORKER_ID
from tests.support.fuzz_server import (
    METHODS,
    Api,
    check_intact,
    decodes,
    dump_keys,
    fuzz_api,
    outcome,
    raw_call,
    start_fuzz_job,
)
from tests.support.tables import rows, write_csv
from workers.conversion import write_task_manifest

pytestmark = pytest.mark.integration


@pytest.fixture
def api(tmp_path: Path, redis_server: object) -> Iterator[Api]:
    yield from fuzz_api(tmp_path, redis_server)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_undecodable_request_is_invalid_argument(api: Api, method: str) -> None:
    """Was INTERNAL 'Exception deserializing request!' (grpc's own deserializer failure)."""
    for payload in (b"\x0a\x10abc", b"\x0a\x04\xff\xfe\xfd\xfc"):  # truncated; invalid UTF-8 (most types)
        if decodes(method, payload):
            continue
        code, details = raw_call(api, method, payload)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (payload, code, details)
        assert "not a valid" in details and "Traceback" not in details
    check_intact(api)


@pytest.mark.parametrize("namespace", [".", "a..b", "demo.", "demo. .x"])
def test_namespace_with_an_empty_segment_is_invalid_argument(api: Api, namespace: str) -> None:
    """Was INTERNAL: pyiceberg's ValueError for an empty namespace level."""
    code = outcome(
        api.coordinator.StartJob,
        coordinator_pb2.StartJobRequest(table=common_pb2.TableRef(namespace=namespace, table="events")),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    check_intact(api)


def test_ids_with_a_trailing_newline_are_refused(api: Api) -> None:
    """Were accepted: ``^...$`` also matches before a trailing newline (queue 'host-1\\n')."""
    scratch = common_pb2.TableRef(namespace="demo", table="scratch")
    for task in (common_pb2.IngestTask(task_id="t1\n"), common_pb2.IngestTask(task_id="t1", host="1\n")):
        code = outcome(api.coordinator.StartJob, coordinator_pb2.StartJobRequest(table=scratch, tasks=[task]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, task
    code = outcome(api.coordinator.GetJobStatus, coordinator_pb2.GetJobStatusRequest(job_id="0" * 32 + "\n"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code = outcome(api.worker.Heartbeat, worker_pb2.WorkerHeartbeatRequest(worker_id=WORKER_ID + "\n"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert not any(queue.endswith("\n") for _, _, queue in api.queue.sent)


def _descriptor_for(api: Api, job_id: str, task_id: str, **changes: Any) -> str:
    """A well-formed description for ``task_id`` of ``job_id``: its manifest exists, in the table."""
    snapshot_id, commit_uuid = api.snapshot_of(job_id)
    api.refill_pool()
    data: dict[str, Any] = {
        "task_id": task_id,
        "snapshot_id": snapshot_id,
        "commit_uuid": commit_uuid,
        "manifest_path": api.pool(0).as_uri(),
        "manifest_length": 100,
        "partition_spec_id": 0,
        "added_files_count": 1,
        "added_rows_count": 10,
        "added_bytes": 100,
        "partitions": [],
        "data_files": [api.pool(1).as_uri()],
    }
    data.update(changes)
    return json.dumps(data)


def _report(api: Api, job_id: str, task_id: str, described: str) -> tuple[grpc.StatusCode, str]:
    request = coordinator_pb2.ReportManifestRequest(
        job_id=job_id, manifest=common_pb2.ManifestInfo(task_id=task_id, descriptor_json=described)
    )
    try:
        api.coordinator.ReportManifest(request, timeout=30)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("rows_count", [2**63, 2**70, -(2**63) - 1, 2**53, -1, 1.5e300, True])
def test_counts_that_are_not_counts_are_refused_atomically(api: Api, rows_count: object) -> None:
    """Was INTERNAL, half-recorded: HINCRBY past int64 failed midway through the Lua script, after
    the manifest was recorded and manifests/tasks_done bumped (rows, state and version not)."""
    job_id = api.scratch[0]
    before = dump_keys(api.redis, job_id)
    code, details = _report(
        api, job_id, "s0", _descriptor_for(api, job_id, "s0", added_rows_count=rows_count)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert "not a valid manifest description" in details, details
    assert dump_keys(api.redis, job_id) == before  # refused as a whole
    check_intact(api)


@pytest.mark.parametrize("key", ["snapshot_id", "added_rows_count", "manifest_length"])
def test_infinity_in_a_manifest_description_is_invalid_argument(api: Api, key: str) -> None:
    """Was INTERNAL: json.loads accepts Infinity and int(inf) raised OverflowError, for any job id."""
    described = _descriptor_for(api, api.scratch[0], "s0").replace(
        f'"{key}": ', f'"{key}": Infinity, "x": ', 1
    )
    code, details = _report(api, "f" * 32, "s0", described)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)


@pytest.mark.parametrize("bound", ["abc", 5, "!!!!"])
def test_partition_bounds_that_are_not_base64_are_refused(api: Api, bound: object) -> None:
    """Were accepted, then CommitJob failed decoding them: INTERNAL, and the job stuck in COMMITTING."""
    job_id = start_fuzz_job(api, "scratch", [common_pb2.IngestTask(task_id="only")], auto_commit=False)
    described = _descriptor_for(
        api, job_id, "only", partitions=[{"contains_null": False, "lower_bound": bound}]
    )
    code, details = _report(api, job_id, "only", described)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert outcome(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=job_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )


def test_a_manifest_that_does_not_exist_or_lies_outside_the_table_is_refused(api: Api) -> None:
    """Was accepted and committed: the table's snapshot then named a missing file; every read failed."""
    job_id = start_fuzz_job(api, "scratch", [common_pb2.IngestTask(task_id="only")], auto_commit=False)
    missing = (api.sandbox / "missing-m0.avro").as_uri()
    outside = (api.outside / "pool-0.avro").as_uri()
    for changes in (
        {"manifest_path": missing},
        {"manifest_path": outside},
        {"data_files": [outside]},
        {"data_files": [f"{api.sandbox.as_uri()}/../../../../outside/pool-1.avro"]},
    ):
        code, details = _report(api, job_id, "only", _descriptor_for(api, job_id, "only", **changes))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (changes, code, details)
    assert outcome(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=job_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    api.catalog.load_table("demo.scratch").scan().to_arrow()
    check_intact(api)


def test_a_losing_report_deletes_neither_the_winners_files_nor_files_outside_the_table(api: Api) -> None:
    """Were deleted: a losing report's data_files were deleted unchecked (the winner's included)."""
    recorded = json.loads(api.golden_keys[f"floe:job:{api.golden_id}:manifests"]["t1"])
    victim = (api.outside / "pool-2.avro").as_uri()
    evil = dict(recorded, data_files=[*recorded["data_files"], victim])
    code, _ = _report(api, api.golden_id, "t1", json.dumps(evil))
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # names a file outside the table
    # a second report for t1 naming the winner's files and a file that is not a manifest of this
    # reservation: refused, and nothing is deleted (the coordinator only deletes what this job's
    # own attempts journaled)
    other = Path(api.golden_files[-1]).with_name(f"{recorded['commit_uuid']}-other-m0.avro")
    other.write_bytes(b"a losing attempt's manifest")
    again = dict(recorded, manifest_path=other.as_uri())
    code, details = _report(api, api.golden_id, "t1", json.dumps(again))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cannot be read" in details, details
    assert other.exists()
    check_intact(api)  # the winner's files, the golden job and the outside sandbox are untouched


def _real_manifest(api: Api, job_id: str, task_id: str, first: int, count: int) -> ManifestDescriptor:
    """Convert a real CSV for ``task_id`` of ``job_id`` (on demo.scratch) and record its manifest."""
    table = api.catalog.load_table("demo.scratch")
    source = write_csv(api.outside.parent / "sources" / f"{job_id}-{task_id}.csv", rows(first, count))
    descriptor = write_task_manifest(api.service.status(job_id).snapshot, table, [source], task_id)
    assert descriptor is not None
    assert api.service.record_manifest(job_id, task_id, descriptor, table).accepted
    return descriptor


def test_a_losing_report_cannot_delete_another_jobs_committed_files(api: Api) -> None:
    committed = start_fuzz_job(api, "scratch", [common_pb2.IngestTask(task_id="a")], auto_commit=False)
    theirs = _real_manifest(api, committed, "a", 0, 10)
    assert outcome(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=committed)) == (
        grpc.StatusCode.OK
    )
    job_id = start_fuzz_job(api, "scratch", [common_pb2.IngestTask(task_id="b")], auto_commit=False)
    _real_manifest(api, job_id, "b", 10, 5)
    snapshot_id, commit_uuid = api.snapshot_of(job_id)
    # a losing report for task b naming the committed job's manifest and data files
    evil = dict(theirs.to_dict(), task_id="b", snapshot_id=snapshot_id, commit_uuid=commit_uuid)
    _report(api, job_id, "b", json.dumps(evil))
    files = [Path(p.removeprefix("file://")) for p in [*theirs.data_files, theirs.manifest_path]]
    assert all(p.exists() for p in files), "another job's committed files were deleted"
    assert len(api.catalog.load_table("demo.scratch").scan().to_arrow()) == 10


def test_another_jobs_manifest_cannot_be_committed_again(api: Api) -> None:
    committed = start_fuzz_job(api, "scratch", [common_pb2.IngestTask(task_id="a")], auto_commit=False)
    theirs = _real_manifest(api, committed, "a", 0, 10)
    outcome(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=committed))
    job_id = start_fuzz_job(api, "scratch", [common_pb2.IngestTask(task_id="x")], auto_commit=False)
    snapshot_id, commit_uuid = api.snapshot_of(job_id)
    borrowed = dict(theirs.to_dict(), task_id="x", snapshot_id=snapshot_id, commit_uuid=commit_uuid)
    code, _ = _report(api, job_id, "x", json.dumps(borrowed))
    if code == grpc.StatusCode.OK:
        outcome(api.coordinator.CommitJob, coordinator_pb2.CommitJobRequest(job_id=job_id))
    ids = api.catalog.load_table("demo.scratch").scan().to_arrow().column("id").to_pylist()
    assert sorted(ids) == list(range(10)), f"{len(ids)} rows, {len(set(ids))} distinct"


@pytest.mark.parametrize("suffix", ["/", "/metadata", "/data/.."])
def test_a_directory_is_not_a_manifest(api: Api, suffix: str) -> None:
    job_id = start_fuzz_job(api, "scratch", [common_pb2.IngestTask(task_id="only")], auto_commit=False)
    location = api.catalog.load_table("demo.scratch").location().rstrip("/")
    code, details = _report(
        api, job_id, "only", _descriptor_for(api, job_id, "only", manifest_path=location + suffix)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
