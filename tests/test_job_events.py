"""WatchJob is pushed, not polled: every job script publishes the job id and watchers wake on it.

Real redis-server and a real gRPC server. The watchers' fallback re-read is set to an hour, so a
watch that is not woken by a notification can only end by the test's own timeout (a failure).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from app.client import CoordinatorClient
from app.grpc import coordinator as coordinator_module
from app.jobs.events import JobEvents
from app.jobs.model import JobState, TaskSpec
from app.jobs.store import JobStore
from app.proto_gen.api import common_pb2, coordinator_pb2
from app.stack import start_redis
from tests.support.api_server import Api, start_request
from tests.support.jobs import create, fail
from tests.support.tables import make_table

NEVER = 3600.0


@pytest.fixture
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordinator_module, "WATCH_FALLBACK_SECONDS", NEVER)


def test_a_change_wakes_the_watchers_of_that_job_only(redis_server: object) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)  # type: ignore[attr-defined]
    client.flushdb()
    store = JobStore(client, 3600)
    events = JobEvents(store)
    try:
        first, _ = create(store, tasks=[TaskSpec("t1")])
        second, _ = create(store, tasks=[TaskSpec("t1")])
        watch_first, watch_second = events.watch(first), events.watch(second)
        assert events.connected.wait(10)
        # subscribing wakes every watch registered by then (changes before it are unknown): the first
        # surely, the second only if it was registered before the listener subscribed
        assert watch_first.wait(0)
        watch_second.wait(0)
        assert store.task_failed(first, "t1", "boom")
        assert watch_first.wait(10)
        assert watch_first.state == store.require(first).state.value  # the notification names the state
        assert not watch_second.wait(0.2)  # nothing happened to the second job
        assert fail(store, second, "stop")
        assert watch_second.wait(10)
        assert watch_second.state == "FAILED"  # a watcher learns the job ended without reading it
        assert not watch_first.wait(0.2)
        watch_first.close()
        watch_second.close()
        assert events.watching() == 0
    finally:
        events.close()
        client.close()


def test_watchers_are_woken_after_the_subscription_is_lost_and_restored(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    client = redis.Redis.from_url(server.url, decode_responses=True)
    store = JobStore(client, 3600)
    events = JobEvents(store)
    try:
        job_id, _ = create(store, tasks=[TaskSpec("t1")])
        watch = events.watch(job_id)
        assert events.connected.wait(10) and watch.wait(10)
        server.stop()  # what is published meanwhile is lost: every watcher must re-read
        assert watch.wait(30)
        server.restart()
        assert events.connected.wait(30)
        watch.wait(0)  # drop the wake-ups of the outage and the reconnect
        assert fail(store, job_id, "after the restart")
        assert watch.wait(10)
        assert store.require(job_id).state is JobState.FAILED
    finally:
        events.close()
        client.close()
        server.stop()


def _states(stream: Iterator[common_pb2.JobStatus], out: list[int]) -> None:
    for status in stream:
        out.append(status.state)


def test_watch_job_streams_each_change_as_it_happens(api: Api, no_fallback: None) -> None:  # noqa: F811
    make_table(api.catalog, "demo.events")
    job_id = api.coordinator.StartJob(start_request(tasks=[{"task_id": "t1", "host": "1"}])).job_id
    stream = api.coordinator.WatchJob(coordinator_pb2.WatchJobRequest(job_id=job_id), timeout=60)
    seen = [next(stream).state]  # the stream is open (and subscribed) before anything changes
    reader = threading.Thread(target=_states, args=(stream, seen))
    reader.start()
    api.service.store.task_failed(job_id, "t1", "first attempt failed")  # a change, still PENDING
    api.coordinator.CancelJob(coordinator_pb2.CancelJobRequest(job_id=job_id, reason="enough"))
    reader.join(60)
    assert not reader.is_alive(), "WatchJob did not end when the job was cancelled"
    assert seen[0] == common_pb2.PENDING and seen[-1] == common_pb2.CANCELLED


def test_watch_job_streams_are_limited_and_the_client_falls_back_to_polling(
    api: Api,  # noqa: F811
    no_fallback: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_table(api.catalog, "demo.events")
    job_id = api.coordinator.StartJob(start_request(tasks=[{"task_id": "t1", "host": "1"}])).job_id
    open_streams = []
    slots = api.coordinator_servicer.max_watches
    for _ in range(slots):
        stream = api.coordinator.WatchJob(coordinator_pb2.WatchJobRequest(job_id=job_id), timeout=60)
        assert next(stream).state == common_pb2.PENDING  # holds a slot until the job ends
        open_streams.append(stream)
    extra = api.coordinator.WatchJob(coordinator_pb2.WatchJobRequest(job_id=job_id), timeout=60)
    with pytest.raises(grpc.RpcError) as info:
        next(extra)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{slots} WatchJob streams are open" in (info.value.details() or "")
    # Other calls still have threads to run on
    assert api.coordinator.GetJobStatus(coordinator_pb2.GetJobStatusRequest(job_id=job_id)).job_id == job_id

    # CoordinatorClient.wait polls GetJobStatus when no watch slot is free
    client = CoordinatorClient(api.target)
    polled = []
    real_status = client.status

    def counting_status(jid: str) -> common_pb2.JobStatus:
        polled.append(jid)
        return real_status(jid)

    monkeypatch.setattr(client, "status", counting_status)
    done: list[common_pb2.JobStatus] = []
    waiter = threading.Thread(target=lambda: done.append(client.wait(job_id, timeout=60, poll_seconds=0.05)))
    waiter.start()
    while not polled:
        threading.Event().wait(0.05)
    api.coordinator.CancelJob(coordinator_pb2.CancelJobRequest(job_id=job_id))
    waiter.join(60)
    client.close()
    assert done and done[0].state == common_pb2.CANCELLED
    for stream in open_streams:  # each ends with the job, freeing its slot
        assert list(stream)[-1].state == common_pb2.CANCELLED
    stream = api.coordinator.WatchJob(coordinator_pb2.WatchJobRequest(job_id=job_id), timeout=60)
    assert [s.state for s in stream] == [common_pb2.CANCELLED]


def test_client_wait_times_out_with_a_clear_error(api: Api) -> None:  # noqa: F811
    make_table(api.catalog, "demo.events")
    job_id = api.coordinator.StartJob(start_request(tasks=[{"task_id": "t1", "host": "1"}])).job_id
    with CoordinatorClient(api.target) as client, pytest.raises(TimeoutError, match=rf"job {job_id} did not finish"):
        client.wait(job_id, timeout=0.5)
