"""Jobs whose hosts plan their own files (issue 15), over the real gRPC API, job service, redis-server
and catalog. The Celery boundary is a recorder here: the planning and ingest tasks it records are run
as the Celery tasks run them (workers.planning.run_plan, workers.task_runner.run_task), in this
process; tests/test_system.py runs the same on the real stack.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import pytest
from google.protobuf.json_format import Parse

from app.errors import InvalidArgument
from app.jobs.model import HostPlan, JobState, Piece, TaskSpec
from app.proto_gen.api import common_pb2, coordinator_pb2
from app.settings import Settings
from tests.support.api_server import Api, call_fails, start_request
from tests.support.tables import (
    make_table,
    read_ids,
    rows,
    write_big_csv,
    write_csv,
    write_jsonl,
    write_parquet,
)
from workers.planning import run_plan
from workers.task_runner import run_task

pytestmark = pytest.mark.integration
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _settings(tmp_path: Path, base: Path, min_task_bytes: int = 1 << 20) -> Settings:
    env = {"FLOE_HOME": str(tmp_path / "home"), "WORKER_DATA_BASE": str(base), "PATH": os.defpath}
    return Settings.from_env({**env, "FLOE_PLAN_MIN_TASK_BYTES": str(min_task_bytes)})


def _status(api: Api, job_id: str) -> common_pb2.JobStatus:
    return api.coordinator.GetJobStatus(coordinator_pb2.GetJobStatusRequest(job_id=job_id), timeout=10)


def _hosts(status: common_pb2.JobStatus) -> dict[str, common_pb2.HostStatus]:
    return {h.host: h for h in status.hosts}


def _run_published(api: Api, job_id: str, settings: dict[str, Settings], done: set[str]) -> None:
    """Run every ingest task the service published for the job, once, on its host."""
    for sent_job, task_id, queue in list(api.queue.sent):
        if sent_job == job_id and task_id not in done:
            done.add(task_id)
            run_task(api.service, job_id, task_id, settings[queue.removeprefix("host-")])


def test_hosts_plan_their_files_and_the_job_lands_once(api: Api, tmp_path: Path) -> None:
    # Given two hosts: h1 with many small files and a big CSV, h2 whose glob matches nothing
    make_table(api.catalog, "demo.events", partitioned=True)
    base1, base2 = tmp_path / "h1", tmp_path / "h2"
    for i in range(40):
        write_csv(base1 / "small" / f"s{i:02d}.csv", rows(100_000 + i * 5, 5))
    write_jsonl(base1 / "small" / "more.jsonl", rows(100_200, 50))
    write_parquet(base1 / "pq" / "p.parquet", rows(100_250, 50))
    write_big_csv(base1 / "big" / "big.csv", 60_000)
    base2.mkdir()
    settings = {"h1": _settings(tmp_path, base1), "h2": _settings(tmp_path, base2)}
    sources = [{"host": "h1", "paths": ["small", "pq/*.parquet", "big/*.csv"]}, {"host": "h2", "paths": ["x/*.csv"]}]

    # When the job starts, it plans: one planning task per host, nothing else yet
    job_id = api.coordinator.StartJob(start_request(sources=sources)).job_id
    assert sorted(h for j, h in api.queue.plans if j == job_id) == ["h1", "h2"]
    status = _status(api, job_id)
    assert status.planning and not status.ready_to_commit and status.auto_commit
    assert {h: s.planning for h, s in _hosts(status).items()} == {"h1": True, "h2": True}

    # h1 plans (2 processes and a 1 MiB minimum task, so the big file is split)
    out = run_plan(api.service, job_id, "h1", settings["h1"], processes=2)
    assert out.startswith("registered: 2 tasks over 43 files")
    h1_tasks = api.service.store.host_tasks(job_id, "h1")
    assert [t.task_id for t in h1_tasks] == ["plan:h1:00001", "plan:h1:00002"]
    big_pieces = [p for t in h1_tasks for p in t.pieces if p.path == "big/big.csv"]
    assert len(big_pieces) == 2 and not any(p.whole for p in big_pieces)  # the big file was split
    status = _status(api, job_id)
    assert status.planning  # h2 has not planned yet
    h1 = _hosts(status)["h1"]
    assert (h1.planning, h1.planned_files, h1.tasks_total, h1.tasks_queued) == (False, 43, 2, 2)

    # a redelivered planning task registers nothing again and publishes nothing again
    sent = len(api.queue.sent)
    assert run_plan(api.service, job_id, "h1", settings["h1"], processes=2) == "already planned"
    assert len(api.service.store.tasks(job_id)) == 2 and len(api.queue.sent) == sent

    # h2 matches nothing: it plans zero tasks and says so
    assert run_plan(api.service, job_id, "h2", settings["h2"], processes=2).startswith("registered: 0 tasks")
    status = _status(api, job_id)
    h2 = _hosts(status)["h2"]
    assert not status.planning and status.expected_manifests == 2
    assert (h2.planning, h2.tasks_total, h2.plan_note) == (False, 0, "no file matches 'x/*.csv'")

    # Then the planned tasks run on h1 and the job commits itself, every row once
    _run_published(api, job_id, settings, set())
    status = _status(api, job_id)
    assert common_pb2.JobState.Name(status.state) == "COMPLETED", status.failure_reason
    assert _hosts(status)["h1"].tasks_done == 2
    expected = list(range(60_000)) + list(range(100_000, 100_300))
    assert read_ids(api.catalog.load_table("demo.events")) == expected


def test_a_duplicated_planning_task_registers_the_first_plan_only(api: Api, tmp_path: Path) -> None:
    make_table(api.catalog, "demo.events")
    job_id = api.coordinator.StartJob(start_request(sources=[{"host": "h1", "paths": ["*.csv"]}])).job_id
    store = api.service.store
    first = [TaskSpec("plan:h1:00001", "h1", (), (Piece("a.csv"),))]
    second = [TaskSpec("plan:h1:00001", "h1", (), (Piece("b.csv"),)), TaskSpec("plan:h1:00002", "h1", (), (Piece("c.csv"),))]
    assert store.register_plan(job_id, "h1", HostPlan(1, 1, 10), first) == ("registered", "PENDING")
    assert store.register_plan(job_id, "h1", HostPlan(2, 2, 20), second) == ("already", "PENDING")
    assert store.tasks(job_id) == first and store.plans(job_id) == {"h1": HostPlan(1, 1, 10)}
    assert store.require(job_id).tasks_total == 1 and not store.require(job_id).planning
    # both planners publish what is registered; the second finds it published already
    assert api.service.publish_plan(job_id, "h1") == 1
    assert api.service.publish_plan(job_id, "h1") == 0


def test_a_job_whose_hosts_find_nothing_completes_with_no_rows(api: Api, tmp_path: Path) -> None:
    make_table(api.catalog, "demo.events")
    (tmp_path / "empty").mkdir()
    job_id = api.coordinator.StartJob(start_request(sources=[{"host": "h1", "paths": ["nothing/*.csv"]}])).job_id
    run_plan(api.service, job_id, "h1", _settings(tmp_path, tmp_path / "empty"), processes=2)
    status = _status(api, job_id)
    assert common_pb2.JobState.Name(status.state) == "COMPLETED" and status.rows_written == 0
    assert _hosts(status)["h1"].plan_note == "no file matches 'nothing/*.csv'"


def test_a_glob_that_escapes_the_data_base_is_refused(api: Api, tmp_path: Path) -> None:
    make_table(api.catalog, "demo.events")
    outside = tmp_path / "outside"
    write_csv(outside / "secret.csv", rows(0, 5))
    base = tmp_path / "base"
    base.mkdir()
    (base / "link").symlink_to(outside)
    job_id = api.coordinator.StartJob(start_request(sources=[{"host": "h1", "paths": ["link/*.csv"]}])).job_id
    with pytest.raises(InvalidArgument, match=r"outside WORKER_DATA_BASE"):
        run_plan(api.service, job_id, "h1", _settings(tmp_path, base), processes=2)
    assert api.service.store.tasks(job_id) == []


@pytest.mark.parametrize(
    "data, pattern",
    [
        ({"sources": [{"host": "", "paths": ["a"]}]}, r"sources\[0\]\.host is required"),
        ({"sources": [{"host": "h/1", "paths": ["a"]}]}, r"sources\[0\]\.host='h/1' is not a valid id"),
        ({"sources": [{"host": "h1", "paths": []}]}, r"sources\[0\]\.paths is empty"),
        ({"sources": [{"host": "h1", "paths": ["../x"]}]}, r"sources\[0\]\.paths\[0\].*'\.\.'"),
        ({"sources": [{"host": "h1", "paths": ["/etc/*"]}]}, r"sources\[0\]\.paths\[0\].*relative to the host's"),
        (
            {"sources": [{"host": "h1", "paths": ["a"]}, {"host": "h1", "paths": ["b"]}]},
            r"sources\[1\]\.host='h1' is given twice",
        ),
        (
            {"sources": [{"host": "h1", "paths": ["a"]}], "expected_manifest_count": 2},
            r"cannot be given with sources",
        ),
        ({"tasks": [{"task_id": "plan:h1:00001"}]}, r"reserved for the tasks hosts plan"),
    ],
)
def test_bad_sources_are_refused(api: Api, data: dict[str, object], pattern: str) -> None:
    make_table(api.catalog, "demo.events")
    call_fails(api.coordinator.StartJob, start_request(**data), INVALID, pattern)


def test_the_cli_parses_sources() -> None:
    from app.client_cli import parse_source

    assert parse_source("h1:data/*.csv,more/*.jsonl") == ("h1", ["data/*.csv", "more/*.jsonl"])
    for bad in ("h1", ":a", "h1:", "h1:,"):
        with pytest.raises(InvalidArgument, match=r"must be HOST:GLOB\[,GLOB\.\.\.\]"):
            parse_source(bad)


def test_a_watchdog_failure_names_the_hosts_that_never_planned(api: Api) -> None:
    make_table(api.catalog, "demo.events")
    request = start_request(sources=[{"host": "h1", "paths": ["a"]}, {"host": "h2", "paths": ["b"]}])
    job_id = api.coordinator.StartJob(request).job_id
    api.service.store.register_plan(job_id, "h1", HostPlan(0, 0, 0), [])
    job = api.service.store.require(job_id)
    assert api.service.watchdog_tick(now=job.deadline + 1) == [job_id]
    failed = api.service.store.require(job_id)
    assert failed.state is JobState.FAILED
    assert failed.failure_reason.endswith("hosts that never planned their sources: h2")


def test_start_request_json_with_sources_parses() -> None:
    payload = {"table": {"namespace": "demo", "table": "events"}, "sources": [{"host": "1", "paths": ["*.csv"]}]}
    request = Parse(json.dumps(payload), coordinator_pb2.StartJobRequest())
    assert [(s.host, list(s.paths)) for s in request.sources] == [("1", ["*.csv"])]
