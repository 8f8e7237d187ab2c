"""Hosts' liveness (issue 16): each Celery worker host heartbeats into Redis from its main process; a
job's status shows each of its hosts live or not with its tasks queued / running / done / failed; a
frozen (SIGSTOP) or killed worker shows ``live: false`` within 30 s, ``floe hosts`` and ListHosts say
so, and the watchdog's failure reason names the silent host."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time

import pytest

from app.client import TaskArg
from app.client_cli import cmd_hosts, hosts_table
from app.jobs.liveness import describe_silent
from app.jobs.model import HostInfo, HostProgress
from app.proto_gen.api import common_pb2, coordinator_pb2
from tests.support.api_server import Api, start_request
from tests.support.system import Cluster, wait_until
from tests.support.tables import make_table, rows, write_csv


def _floe(cluster: Cluster, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=cluster.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["frozen", "killed"])
def test_a_silent_host_shows_not_live_and_the_watchdog_names_it(cluster: Cluster, fault: str) -> None:
    make_table(cluster.catalog, "demo.events")
    for i in range(4):
        write_csv(cluster.data_dir(str(i % 2 + 1)) / f"{i}.csv", rows(i * 10, 10))
    cluster.start_coordinator()
    cluster.start_worker("1")
    worker2 = cluster.start_worker("2")
    cluster.start_beat()
    try:
        with cluster.client() as client:
            wait_until(lambda: {h.host for h in client.hosts() if h.live} >= {"1", "2"}, 30, "both hosts live")
            listed = _floe(cluster, "hosts", "--coordinator", cluster.target)
            assert re.search(r"^1\s+yes\s+\d+s ago\s+1$", listed, re.M) and re.search(r"^2\s+yes\s", listed, re.M)

            # Given host 2's worker freezes (its whole process group stopped) or dies
            silenced = time.monotonic()
            if fault == "frozen":
                worker2.signal_group(signal.SIGSTOP)
            else:
                worker2.kill()
            # When a job has tasks on both hosts
            tasks = [TaskArg(f"t{i}", str(i % 2 + 1), [f"{i}.csv"]) for i in range(4)]
            job_id = client.start_job("demo", "events", requester="t", timeout_seconds=20, tasks=tasks).job_id

            # Then host 1 does its tasks while host 2's wait, and its status says host 2 is not live
            def host_2_silent() -> common_pb2.JobStatus | None:
                status = client.status(job_id)
                hosts = {h.host: h for h in status.hosts}
                return status if hosts["1"].tasks_done == 2 and not hosts["2"].live else None

            status = wait_until(host_2_silent, 40, "host 2 shown not live")
            assert isinstance(status, common_pb2.JobStatus)
            assert time.monotonic() - silenced <= 30
            hosts = {h.host: h for h in status.hosts}
            assert (hosts["2"].tasks_total, hosts["2"].tasks_queued, hosts["2"].tasks_running) == (2, 2, 0)
            assert hosts["2"].HasField("last_heartbeat") and hosts["2"].concurrency == 1
            assert hosts["1"].live and (hosts["1"].tasks_queued, hosts["1"].tasks_done) == (0, 2)
            listed = _floe(cluster, "hosts", "--coordinator", cluster.target)
            assert re.search(r"^1\s+yes\s", listed, re.M) and re.search(r"^2\s+no\s+\d+s ago\s+1$", listed, re.M)
            shown = json.loads(_floe(cluster, "job", "--coordinator", cluster.target, "status", job_id))
            assert {h["host"]: h["live"] for h in shown["hosts"]} == {"1": True, "2": False}
            assert [h["tasks_queued"] for h in shown["hosts"] if h["host"] == "2"] == [2]

        # And the watchdog fails the job, naming the silent host
        final = cluster.wait_for_state(job_id, timeout=90)
        assert final.state == common_pb2.FAILED
        assert "2 of 4 manifests accepted" in final.failure_reason
        assert re.search(r"silent hosts .*: host 2 \(2 queued; last heartbeat \d+s ago\)$", final.failure_reason)
    finally:
        if fault == "frozen":
            worker2.signal_group(signal.SIGCONT)


def test_hosts_are_listed_with_their_heartbeat_and_concurrency(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    store = api.service.store
    now = time.time()
    store.worker_heartbeat("1", now=now - 2, concurrency=4)
    store.worker_heartbeat("2", now=now - 40, concurrency=2)
    store.worker_heartbeat("gone", now=now - 7200)  # not seen within the hour: not listed
    reply = api.coordinator.ListHosts(coordinator_pb2.ListHostsRequest(), timeout=10)
    assert [(h.host, h.live, h.concurrency) for h in reply.hosts] == [("1", True, 4), ("2", False, 2)]
    assert cmd_hosts(argparse.Namespace(coordinator=api.target, json=False)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["HOST", "LIVE", "LAST", "HEARTBEAT", "CONCURRENCY"]
    assert lines[1].split() == ["1", "yes", "2s", "ago", "4"] and lines[2].split() == ["2", "no", "40s", "ago", "2"]
    assert cmd_hosts(argparse.Namespace(coordinator=api.target, json=True)) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(h["host"], h.get("live", False), h["concurrency"]) for h in listed] == [("1", True, 4), ("2", False, 2)]
    never = common_pb2.HostStatus(host="new")
    assert hosts_table([never]).splitlines()[1].split() == ["new", "no", "never", "?"]


def test_status_shows_each_host_of_the_job_with_its_liveness(api: Api) -> None:
    make_table(api.catalog, "demo.events")
    store = api.service.store
    store.worker_heartbeat("1", concurrency=2)  # host 2 never heartbeat
    tasks = [{"task_id": "a", "host": "1"}, {"task_id": "b", "host": "2"}, {"task_id": "c", "host": "2"}]
    job_id = api.coordinator.StartJob(start_request(tasks=tasks)).job_id
    store.task_context(job_id, "b")  # started on host 2 (which then went silent)
    status = api.coordinator.GetJobStatus(coordinator_pb2.GetJobStatusRequest(job_id=job_id), timeout=10)
    hosts = {h.host: h for h in status.hosts}
    assert (hosts["1"].live, hosts["1"].concurrency, hosts["1"].tasks_queued) == (True, 2, 1)
    assert hosts["1"].last_heartbeat.ToSeconds() > 0
    assert (hosts["2"].live, hosts["2"].HasField("last_heartbeat")) == (False, False)
    assert (hosts["2"].tasks_queued, hosts["2"].tasks_running) == (1, 1)
    # the watchdog names it: one task queued, one running, never heard of
    job = store.require(job_id)
    store.worker_heartbeat("1", now=job.deadline)  # host 1 is live when the watchdog looks
    assert api.service.watchdog_tick(now=job.deadline + 1) == [job_id]
    reason = store.require(job_id).failure_reason
    assert reason.endswith("silent hosts (tasks waiting, no live worker): host 2 (1 queued, 1 running; never heartbeat)")


def test_describe_silent_leaves_out_live_hosts_and_the_shared_queue() -> None:
    now = 1000.0
    views = [
        (HostProgress("1", False, None, 3, 0, 0, 1), HostInfo("1", 990.0, 2), True),  # live
        (HostProgress("", False, None, 5, 0, 0, 0), HostInfo("", None, 0), False),  # the shared ingest queue
        (HostProgress("2", False, None, 3, 3, 0, 0), HostInfo("2", 900.0, 2), False),  # nothing waiting
        (HostProgress("3", False, None, 4, 1, 1, 0), HostInfo("3", 958.6, 2), False),
    ]
    assert describe_silent(views, now) == "host 3 (2 queued; last heartbeat 41s ago)"
