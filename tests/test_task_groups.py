"""A host with many tasks gets them several to a Celery message (app.jobs.dispatch.message_groups, run by
workers.task_runner.run_tasks): fewer messages for its consumer, the broker and Flower, the same outcome
per task — a failure fails the job naming its task, a retry of the group converts no task twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from app import keys
from app.client import TaskArg
from app.jobs.dispatch import GROUP_SPREAD, MAX_GROUP, message_groups
from app.jobs.dispatch_store import Outgoing
from app.jobs.service import JobService
from app.jobs.store import JobStore
from app.proto_gen.api import common_pb2
from app.settings import Settings
from tests.support.jobs import create, fail
from tests.support.system import TERMINAL, Cluster, wait_until
from tests.support.tables import make_table, read_ids, rows, write_csv
from workers.task_runner import run_tasks


def test_a_host_with_few_tasks_gets_one_message_per_task() -> None:
    entries = [Outgoing(str(i % 2 + 1), f"t{i}") for i in range(2 * (2 * GROUP_SPREAD - 1))] + [Outgoing("3")]
    groups = message_groups(entries)
    assert all(len(g) == 1 for g in groups) and len(groups) == len(entries)


def test_many_tasks_of_a_host_go_several_to_a_message_in_order() -> None:
    entries = [Outgoing("1", f"a{i:03d}") for i in range(500)] + [Outgoing("2", f"b{i}") for i in range(70)]
    entries.insert(10, Outgoing("1"))  # a planning entry travels alone
    groups = message_groups(entries)
    host1 = [g for g in groups if g[0].host == "1" and g[0].task_id]
    assert [len(g) for g in host1] == [MAX_GROUP] * 31 + [4]
    assert [e.task_id for g in host1 for e in g] == [f"a{i:03d}" for i in range(500)]
    assert [len(g) for g in groups if g[0].host == "2"] == [4] * 17 + [2]  # 70 // 16: four to a message
    assert [[Outgoing("1")]] == [g for g in groups if not g[0].task_id]


@given(st.lists(st.tuples(st.sampled_from(["", "1", "2"]), st.booleans()), max_size=600))
def test_every_entry_is_in_exactly_one_message_of_its_own_queue(spec: list[tuple[str, bool]]) -> None:
    entries = [Outgoing(host, f"t{i}" if task else "") for i, (host, task) in enumerate(spec)]
    groups = message_groups(entries)
    assert Counter(e for g in groups for e in g) == Counter(entries)
    for g in groups:
        assert len({e.queue for e in g}) == 1 and 1 <= len(g) <= MAX_GROUP
        assert len(g) == 1 or all(e.task_id for e in g)


# --- through real workers -------------------------------------------------------------------------

N = 2 * GROUP_SPREAD + 2  # one host, one row per task: two tasks to a message


@pytest.mark.parametrize("queued", [True, False])
def test_a_group_past_its_budget_says_whether_it_handed_tasks_back(
    store: JobStore, tmp_path: Path, queued: bool
) -> None:
    # a job that has ended (its tasks skip) and a budget of 0: the group hands back after its first task
    job_id, _ = create(store)
    assert fail(store, job_id, "stopped")
    service = JobService(store, None, lambda ref: None)  # type: ignore[arg-type] - neither is reached
    settings = Settings.from_env({"FLOE_HOME": str(tmp_path), "FLOE_GROUP_BUDGET_MS": "0"})
    handed: list[list[str]] = []

    def hand_back(rest: list[str]) -> bool:
        handed.append(rest)
        return queued  # False: the job was no longer open, nothing was queued

    outcome = run_tasks(service, job_id, ["a", "b", "c"], settings, hand_back)
    assert handed == [["b", "c"]]
    left = "2 handed back" if queued else "2 skipped: job closed"
    assert outcome == f"1 skipped: job is FAILED, {left}"


def _start(cluster: Cluster, table: str, partitioned: bool = False) -> None:
    make_table(cluster.catalog, f"demo.{table}", partitioned=partitioned)
    for i in range(N):
        write_csv(cluster.data_dir("1") / table / f"{i}.csv", rows(i, 1))
    cluster.start_coordinator()
    cluster.start_worker("1", concurrency=1)


@pytest.mark.integration
def test_a_group_retried_after_a_failed_write_converts_no_task_twice(cluster: Cluster) -> None:
    # Given the partition directory of category 'c' is blocked by a file: every third task's write fails
    _start(cluster, "events", partitioned=True)
    table = cluster.catalog.load_table("demo.events")
    data = Path(table.location().removeprefix("file://")) / "data"
    data.mkdir(parents=True)
    (data / "category=c").write_text("in the way")
    tasks = [TaskArg(f"t{i:03d}", "1", [f"events/{i}.csv"]) for i in range(N)]
    with cluster.client() as client:
        job_id = client.start_job("demo", "events", requester="t", tasks=tasks).job_id
        # When the groups that hold a 'c' task have failed once (OSError: retried) and the block goes
        retried = wait_until(lambda: cluster.json_lines("task will retry"), 60, "a group's retry")
        (data / "category=c").unlink()
        status = wait_until(lambda: (s := client.status(job_id)).state in TERMINAL and s, 120, "the job")
    # Then the job completed with every row once, and each retry named the task it failed in
    assert status.state == common_pb2.COMPLETED, (status.failure_reason, cluster.logs()[-3000:])
    assert sorted(read_ids(cluster.catalog.load_table("demo.events"))) == list(range(N))
    assert retried and all(int(str(line["task_id"])[1:]) % 3 == 2 for line in retried)  # 'c': i % 3 == 2
    r = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    # 17 messages of two tasks (and one per task handed back, should a group pass its budget)
    assert r.scard(keys.job_celery_ids(job_id)) == N // 2 + cluster.handed_back()
    # the group t004, t005 failed in its second task: on its retry t004 was already recorded, not rewritten
    written = [p.name for p in data.rglob("*.parquet")]
    assert sum(name.startswith("t004-") for name in written) == 1
    assert sum(name.startswith("t005-") for name in written) == 1
    r.close()


@pytest.mark.integration
def test_a_task_that_fails_for_good_inside_a_group_fails_the_job_naming_it(cluster: Cluster) -> None:
    _start(cluster, "events", partitioned=False)
    (cluster.data_dir("1") / "events" / "33.csv").write_text(
        "id,name,category,ts,amount\nnot-a-number,x,a,2024-01-01T00:00:00,1\n"
    )
    tasks = [TaskArg(f"t{i:03d}", "1", [f"events/{i}.csv"]) for i in range(N)]
    with cluster.client() as client:
        job_id = client.start_job("demo", "events", requester="t", tasks=tasks).job_id
        status = wait_until(lambda: (s := client.status(job_id)).state in TERMINAL and s, 120, "the job")
    assert status.state == common_pb2.FAILED
    assert status.failure_reason.startswith("task t033 failed: ") and "33.csv" in status.failure_reason
    assert cluster.catalog.load_table("demo.events").current_snapshot() is None


@pytest.mark.integration
def test_a_group_past_its_budget_hands_its_other_tasks_back_one_message_each(
    tmp_path: Path, redis_server: object
) -> None:
    # Given a worker whose groups may run for 0 ms: each runs its first task and hands the rest back
    cluster = Cluster(tmp_path / "floe", redis_server.url, {"FLOE_GROUP_BUDGET_MS": "0"})  # type: ignore[attr-defined]
    try:
        cluster.catalog.create_namespace("demo")
        _start(cluster, "events")
        tasks = [TaskArg(f"t{i:03d}", "1", [f"events/{i}.csv"]) for i in range(N)]
        with cluster.client() as client:
            job_id = client.start_job("demo", "events", requester="t", tasks=tasks).job_id
            status = wait_until(lambda: (s := client.status(job_id)).state in TERMINAL and s, 120, "the job")
        # Then every task ran once, the second of each group from a message of its own
        assert status.state == common_pb2.COMPLETED, (status.failure_reason, cluster.logs()[-3000:])
        assert sorted(read_ids(cluster.catalog.load_table("demo.events"))) == list(range(N))
        handed = cluster.json_lines("group handed 1 tasks back")
        assert sorted(str(line["task_id"]) for line in handed) == [f"t{i:03d}" for i in range(1, N, 2)]
        r = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
        assert float(r.hget(keys.METRICS, "tasks_repeated_total") or 0) == 0  # nothing ran twice
        # the handed-back messages count among the job's Celery ids (a cancel revokes them): N // 2
        # dispatched messages of two tasks, then one message for each second task
        assert r.scard(keys.job_celery_ids(job_id)) == N // 2 + len(handed) == N // 2 + cluster.handed_back()
        r.close()
    finally:
        cluster.stop_all()
