"""StartJob answers first; its messages are published afterwards, exactly once (app/jobs/dispatch.py).

The store-level tests drive the dispatch scripts on a real redis-server; the system tests SIGKILL real
coordinators while they publish (a plain ``floe coordinator`` killed at a random point of 10,000 tasks,
and ``chaos.crashing_coordinator --die-at mid-dispatch`` after its first chunk) and count every message
in the broker and every row in the table.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from app import keys
from app.errors import InvalidArgument
from app.jobs.dispatch import MAX_GROUP, Dispatcher
from app.jobs.dispatch_store import Message, Outgoing
from app.jobs.model import JobState, TaskSpec
from app.jobs.task_batch import TaskBatch
from app.jobs.validation import MAX_PATHS_PER_TASK, MAX_TASKS, PLANNED_TASK_PREFIX, check_tasks
from app.proto_gen.api import common_pb2, coordinator_pb2
from tests.support.api_server import Api, start_request
from tests.support.system import Cluster, wait_until
from tests.support.tables import make_table, read_ids, rows, write_csv

# --- the columns StartJob's tasks travel in ------------------------------------------------------

_CHARS = st.sampled_from(list("ab1._:-/~ \"\\\n\x00é*") + ["..", "plan:"])
_TEXT = st.lists(_CHARS, max_size=6).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_TEXT, _TEXT, st.lists(_TEXT, max_size=3)), max_size=5))
def test_the_quick_check_accepts_only_what_check_tasks_accepts(tasks: list[tuple[str, str, list[str]]]) -> None:
    batch = TaskBatch([t[0] for t in tasks], [t[1] for t in tasks], [t[2] for t in tasks])
    specs = [TaskSpec(i, h, tuple(p)) for i, h, p in tasks]
    if batch.plainly_valid(MAX_TASKS, MAX_PATHS_PER_TASK, PLANNED_TASK_PREFIX):
        check_tasks(specs)  # never raises for what the quick check let through
    try:
        check_tasks(specs)
    except InvalidArgument:
        return
    # valid tasks: the dispatch entries CREATE records carry what TaskSpec.to_json writes, however made
    entries = [e for chunk in batch.dispatch_chunks(2) for e in chunk.split("\n")] if specs else []
    assert [Outgoing.parse(e) for e in entries] == [Outgoing(s.host, s.task_id) for s in specs]
    assert [json.loads(e.partition("\1")[2]) for e in entries] == [json.loads(s.to_json()) for s in specs]


@pytest.mark.parametrize(
    ("task_id", "host", "path"),
    [("a\nb", "1", "x"), ("t1\n", "1", "x"), ("t1", "a\nb", "x"), ("t1", "1\n", "x"), ("t1", "1", "a\nb"),
     ("t1", "1", "a/../b"), ("t1", "1", "/abs"), ("t1", "1", "~/x"), ("t1", "1", ""), ("plan:h:1", "1", "x")],
)  # fmt: skip
def test_the_quick_check_refuses_line_breaks_and_escapes(task_id: str, host: str, path: str) -> None:
    batch = TaskBatch([task_id, "other"], [host, "2"], [[path], ["y"]])
    assert not batch.plainly_valid(MAX_TASKS, MAX_PATHS_PER_TASK, PLANNED_TASK_PREFIX)
    if path == "a\nb":  # a line break is allowed in a glob: check_tasks accepts what the quick check left
        check_tasks(list(batch))
        assert json.loads(batch.dispatch_chunks(10)[0].split("\n")[0].partition("\1")[2])["paths"] == [path]
        return
    with pytest.raises(InvalidArgument):
        check_tasks(list(batch))


def test_ten_thousand_plain_tasks_take_the_quick_path() -> None:
    batch = TaskBatch([f"t{i}" for i in range(10_000)], ["1", ""] * 5_000, [[f"d/{i}.csv"] for i in range(10_000)])
    assert batch.plainly_valid(MAX_TASKS, MAX_PATHS_PER_TASK, PLANNED_TASK_PREFIX)
    assert len(batch.dispatch_chunks(keys.DISPATCH_BATCH)) == 20
    assert batch.host_counts() == {"1": 5_000, "": 5_000}


# --- the dispatch scripts, one store -------------------------------------------------------------


class Stamp:
    """A renderer that stamps each message with its entry (the broker list is ``q:<queue>``)."""

    def __init__(self) -> None:
        self.rendered = 0

    def render(self, job_id: str, entries: list[Outgoing]) -> list[Message]:
        self.rendered += len(entries)
        return [Message(f"q:{e.queue}", e.task_id or f"@{e.host}", f"c-{e.task_id or e.host}") for e in entries]


def _messages(r: redis.Redis, *queues: str) -> Counter[str]:
    return Counter(m for q in queues for m in r.lrange(f"q:{q}", 0, -1))


def test_each_chunk_is_published_once_and_only_under_the_lease(api: Api) -> None:
    make_table(api.catalog, "demo.events")
    store, r = api.service.store, api.redis
    tasks = [{"task_id": f"t{i:04d}", "host": str(i % 2 + 1)} for i in range(1_200)]
    api.service.dispatcher.start()  # StartJob only hands the job over; nothing is rendered by this test's thread
    api.service.dispatcher.close()  # ... and nobody takes it: the test dispatches by hand
    job_id = api.coordinator.StartJob(start_request(tasks=tasks)).job_id
    assert store.dispatch_progress(job_id) == (0, 3)  # chunks of 500, 500 and 200
    token = r.get(keys.dispatch_lock(job_id))  # CREATE handed the lease to StartJob's dispatcher
    assert token and store.acquire_dispatch_lease(job_id) is None

    stamp = Stamp()
    other = Dispatcher(store, stamp)
    assert other.dispatch(job_id) == 0 and other.sweep() == 0  # the lease is held: nothing published
    batch = store.dispatch_read(job_id)
    assert (batch.cursor, len(batch.entries)) == (0, 500)
    messages = stamp.render(job_id, batch.entries)
    assert store.dispatch_publish(job_id, "not-the-token", 0, 1, messages)[0] == "lost"
    assert store.dispatch_publish(job_id, token, 0, 1, messages) == ("ok", "1/3")
    assert store.dispatch_publish(job_id, token, 0, 1, messages) == ("moved", "1")  # never twice
    # the holder dies here: its lease runs out, and the next sweep goes on from the cursor
    r.delete(keys.dispatch_lock(job_id))
    assert other.sweep() == 700
    assert store.dispatch_progress(job_id) == (3, 3) and job_id not in store.dispatch_pending()
    published = _messages(r, "host-1", "host-2")
    assert sorted(published) == [t["task_id"] for t in tasks] and set(published.values()) == {1}
    assert len(store.celery_ids(job_id)) == 1_200 and store.require(job_id).enqueued
    assert r.get(keys.dispatch_lock(job_id)) is None  # given back


def test_entries_appended_while_the_holder_finishes_are_published(api: Api) -> None:
    make_table(api.catalog, "demo.events")
    store, r = api.service.store, api.redis
    job_id = api.coordinator.StartJob(start_request()).job_id  # no tasks yet: nothing to publish
    assert job_id not in store.dispatch_pending() and store.require(job_id).enqueued
    token = store.acquire_dispatch_lease(job_id)
    assert token is not None
    # a dispatcher holds the lease and has found nothing left when AssignTasks appends a task ...
    assert store.register_tasks(job_id, [TaskSpec("late", "1")]).ids == ["late"]
    assert Dispatcher(store, Stamp()).dispatch(job_id) == 0  # ... whose own dispatch finds the lease held
    # ... so the holder may not give the lease back: it publishes the new entry first
    assert store.release_dispatch_lease(job_id, token) is False
    assert Dispatcher(store, Stamp()).dispatch(job_id, token) == 1
    assert _messages(r, "host-1") == Counter({"late": 1}) and r.get(keys.dispatch_lock(job_id)) is None


def test_a_finished_job_publishes_nothing_more(api: Api) -> None:
    make_table(api.catalog, "demo.events")
    store, r = api.service.store, api.redis
    api.service.dispatcher.start()
    api.service.dispatcher.close()
    job_id = api.coordinator.StartJob(start_request(tasks=[{"task_id": "t1", "host": "1"}])).job_id
    token = r.get(keys.dispatch_lock(job_id))
    api.service.cancel(job_id)
    messages = Stamp().render(job_id, store.dispatch_read(job_id).entries)
    assert store.dispatch_publish(job_id, token, 0, 1, messages) == ("closed", JobState.CANCELLED.value)
    assert _messages(r, "host-1") == Counter() and job_id not in store.dispatch_pending()


# --- real coordinators killed while they publish --------------------------------------------------


def _task_ids(r: redis.Redis, queue: str) -> Counter[str]:
    """The Floe task ids of every Celery message waiting in ``queue`` (kombu's Redis transport format):
    one per ``floe.ingest`` message, a group per ``floe.ingest_many`` message."""
    ids: Counter[str] = Counter()
    for raw in r.lrange(queue, 0, -1):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        if message["headers"]["task"] == "floe.ingest_many":
            assert 1 < len(args[1]) <= MAX_GROUP
            ids.update(args[1])
        else:
            assert message["headers"]["task"] == "floe.ingest"
            ids[args[1]] += 1
    return ids


@pytest.mark.integration
def test_a_coordinator_killed_while_it_publishes_10000_tasks_leaves_each_published_once(
    cluster: Cluster,
) -> None:
    make_table(cluster.catalog, "demo.events")
    coordinator = cluster.start_coordinator("coordinator-1")
    tasks = [common_pb2.IngestTask(task_id=f"t{i:05d}", host="idle", paths=[f"x/{i}.csv"]) for i in range(10_000)]
    r = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    with cluster.client() as client:
        started = time.monotonic()
        reply = client.stub.StartJob(
            coordinator_pb2.StartJobRequest(
                table=common_pb2.TableRef(namespace="demo", table="events"), requester="t", tasks=tasks
            ),
            timeout=30,
        )
        # Given the coordinator is SIGKILLed while its dispatcher publishes (no worker consumes the queue)
        published = wait_until(
            lambda: int(r.hget(keys.job(reply.job_id), "dispatched") or 0), 30, "a chunk", interval=0.002
        )
        coordinator.kill()
        answered = time.monotonic() - started
    chunks = r.llen(keys.job_dispatch(reply.job_id))
    assert 0 < int(r.hget(keys.job(reply.job_id), "dispatched")) < chunks == 20, (published, answered)
    queued = _task_ids(r, "host-idle")
    assert sum(queued.values()) == 500 * int(r.hget(keys.job(reply.job_id), "dispatched"))  # whole chunks
    assert r.llen("host-idle") == 32 * int(r.hget(keys.job(reply.job_id), "dispatched"))  # 16 tasks a message
    # When another coordinator starts, its sweep takes over once the dead one's lease has run out
    cluster.procs.remove(coordinator)
    cluster.start_coordinator("coordinator-2")
    wait_until(lambda: r.hget(keys.job(reply.job_id), "enqueued") == "1", 60, "the rest published")
    # Then every task was published exactly once
    ids = _task_ids(r, "host-idle")
    assert sorted(ids) == [t.task_id for t in tasks] and set(ids.values()) == {1}
    assert r.scard(keys.job_celery_ids(reply.job_id)) == r.llen("host-idle") == 20 * 32
    assert reply.job_id not in r.smembers(keys.DISPATCH_PENDING)
    with cluster.client() as client:
        assert client.status(reply.job_id).tasks_total == 10_000
        client.cancel(reply.job_id)
    r.close()


@pytest.mark.integration
def test_a_coordinator_dying_mid_dispatch_loses_and_repeats_no_task(cluster: Cluster) -> None:
    make_table(cluster.catalog, "demo.events")
    n = 1_200  # three chunks: the first published by the dying coordinator, two by beat's sweep
    for i in range(n):
        write_csv(cluster.data_dir(str(i % 2 + 1)) / "one" / f"{i}.csv", rows(i, 1))
    cluster.start_coordinator(
        "crashing-coordinator", [sys.executable, "-m", "chaos.crashing_coordinator", "--die-at", "mid-dispatch"]
    )
    cluster.start_worker("1", concurrency=2)
    cluster.start_worker("2", concurrency=2)
    cluster.start_beat()
    tasks = [common_pb2.IngestTask(task_id=f"t{i:04d}", host=str(i % 2 + 1), paths=[f"one/{i}.csv"]) for i in range(n)]
    with cluster.client() as client:
        reply = client.stub.StartJob(
            coordinator_pb2.StartJobRequest(
                table=common_pb2.TableRef(namespace="demo", table="events"), requester="t", tasks=tasks
            ),
            timeout=30,
        )
    crashed = cluster.procs[0]
    wait_until(lambda: not crashed.alive, 30, "the coordinator to die after its first chunk")
    assert "SIGKILL after publishing the first chunk" in crashed.output()
    # no coordinator runs now: beat's sweep publishes the rest once the dead one's lease has run out
    r = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    state = wait_until(
        lambda: (s := r.hget(keys.job(reply.job_id), "state")) in ("COMPLETED", "FAILED", "CANCELLED") and s,
        150,
        "the job to finish",
        interval=0.5,
    )
    assert state == "COMPLETED", (r.hget(keys.job(reply.job_id), "failure_reason"), cluster.logs()[-3000:])
    assert read_ids(cluster.catalog.load_table("demo.events")) == list(range(n))
    assert float(r.hget(keys.METRICS, "tasks_repeated_total") or 0) == 0  # no message ran twice
    # 250 tasks per host in each chunk of 500 (three chunks: 500, 500, 200): 15 to a message, 6 at the end;
    # a group that ran past its budget (a loaded machine) handed tasks back, one message each
    assert r.scard(keys.job_celery_ids(reply.job_id)) == 2 * (17 + 17 + 17) + cluster.handed_back()
    r.close()


def test_status_counts_running_tasks_per_host(api: Api, tmp_path: Path) -> None:
    make_table(api.catalog, "demo.events")
    tasks = [{"task_id": "a1", "host": "1"}, {"task_id": "a2", "host": "1"}, {"task_id": "b1", "host": "2"}]
    job_id = api.coordinator.StartJob(start_request(tasks=tasks)).job_id
    store = api.service.store

    def counts() -> dict[str, tuple[int, int, int, int]]:
        status = api.coordinator.GetJobStatus(coordinator_pb2.GetJobStatusRequest(job_id=job_id), timeout=10)
        return {h.host: (h.tasks_queued, h.tasks_running, h.tasks_done, h.tasks_failed) for h in status.hosts}

    assert counts() == {"1": (2, 0, 0, 0), "2": (1, 0, 0, 0)}
    job, recorded, spec = store.task_context(job_id, "a1")  # a worker starts a1, then b1
    assert job is not None and recorded is None and spec == TaskSpec("a1", "1")
    store.task_context(job_id, "b1")
    assert counts() == {"1": (1, 1, 0, 0), "2": (0, 1, 0, 0)}
    store.task_stopped(job_id, "a1")  # a1 waits for a retry: queued again
    store.task_failed(job_id, "b1", "unreadable")
    assert counts() == {"1": (2, 0, 0, 0), "2": (0, 0, 0, 1)}
    store.task_context(job_id, "a2")
    assert api.service.record_manifest(job_id, "a2", None).accepted  # no rows: recorded all the same
    assert counts() == {"1": (1, 0, 1, 0), "2": (0, 0, 0, 1)}
