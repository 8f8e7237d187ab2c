"""app.jobs.store.JobStore against a real redis-server: the Lua transitions, TTLs, listing, the commit lock."""

from __future__ import annotations

import base64
import time
from dataclasses import replace

import pytest
import redis

from app import keys
from app.errors import NotFound
from app.iceberg import ManifestDescriptor
from app.iceberg.inline_manifest import InlineManifest, header_digest
from app.iceberg.schema_evolution import FieldRequest
from app.jobs.dispatch_store import Message
from app.jobs.model import OPEN_STATES, HostPlan, JobState, Piece, TaskSpec
from app.jobs.store import JobStore, Registration
from tests.support.jobs import RETENTION, TABLE, create, descriptor, fail, task_spec

pytestmark = pytest.mark.integration

# --- create ---------------------------------------------------------------------------------------


def test_create_stores_a_pending_job_with_its_tasks(store: JobStore, r: redis.Redis) -> None:
    job_id, created = create(store, now=1000.0)
    assert created and len(job_id) == 32
    job = store.require(job_id)
    assert job.state is JobState.PENDING
    assert job.table == TABLE and job.requester == "tester" and job.job_timeout_seconds == 600
    assert job.tasks_total == 2 and job.expected == 2 and job.manifests_accepted == 0
    assert job.created_at == job.last_progress_at == 1000.0 and job.finished_at is None
    assert job.auto_commit and job.snapshot_properties == {"k": "v"} and job.version == 1
    assert job.snapshot.snapshot_id == 42
    assert store.tasks(job_id) == [TaskSpec("t1", "h1", ("*.csv",)), TaskSpec("t2", "h2")]
    assert store.active_ids() == [job_id]
    assert r.zscore(keys.JOBS_BY_TIME, job_id) == 1000.0
    assert r.ttl(keys.job(job_id)) == -1  # open jobs never expire


def test_idempotency_key_returns_the_first_job(store: JobStore, r: redis.Redis) -> None:
    first, created = create(store, key="req-1")
    again, created_again = create(store, tasks=[TaskSpec("other")], key="req-1")
    assert created and not created_again
    assert again == first
    assert [t.task_id for t in store.tasks(first)] == ["t1", "t2"]  # the retry's tasks are ignored
    assert r.zcard(keys.JOBS_BY_TIME) == 1 and store.active_ids() == [first]
    assert 0 < r.ttl(keys.idempotency("req-1")) <= RETENTION
    other, created_other = create(store, key="req-2")
    assert created_other and other != first


def test_without_idempotency_key_every_create_is_new(store: JobStore) -> None:
    a, _ = create(store)
    b, _ = create(store)
    assert a != b and sorted(store.active_ids()) == sorted([a, b])


def test_missing_job(store: JobStore) -> None:
    assert store.get("0" * 32) is None
    with pytest.raises(NotFound, match="job '0{32}' does not exist"):
        store.require("0" * 32)


# --- register_tasks -------------------------------------------------------------------------------


def test_register_tasks_first_registration_wins(store: JobStore) -> None:
    job_id, _ = create(store, tasks=[])
    reg = store.register_tasks(job_id, [TaskSpec("a", "h1", ("x.csv",)), TaskSpec("b", "h1")])
    assert reg == Registration("PENDING", "ok", ["a", "b"])
    version = store.require(job_id).version
    reg = store.register_tasks(job_id, [TaskSpec("a", "h1", ("y.csv",)), TaskSpec("c", "h1")])
    assert reg == Registration("PENDING", "ok", ["c"])
    assert task_spec(store, job_id, "a") == TaskSpec("a", "h1", ("x.csv",))  # not overwritten
    job = store.require(job_id)
    assert job.tasks_total == 3 and job.version == version + 1
    # all known: nothing changes, not even the version
    assert store.register_tasks(job_id, [TaskSpec("a", "h1"), TaskSpec("c", "h1")]) == Registration("PENDING", "ok", [])
    assert store.require(job_id).version == version + 1


def test_a_known_task_for_another_host_refuses_the_whole_request(store: JobStore) -> None:
    job_id, _ = create(store, tasks=[])
    store.register_tasks(job_id, [TaskSpec("a", "h1")])
    reg = store.register_tasks(job_id, [TaskSpec("new", "h2"), TaskSpec("a", "h2")])
    assert reg == Registration("PENDING", "conflict", ["a", "h1"])
    assert [t.task_id for t in store.tasks(job_id)] == ["a"]  # "new" was not registered either


@pytest.mark.parametrize("state", ["COMMITTING", "COMPLETED", "FAILED", "CANCELLED"])
def test_a_closed_job_acknowledges_known_tasks_and_refuses_new_ones(store: JobStore, state: str) -> None:
    job_id, _ = create(store, tasks=[TaskSpec("a", "h1")])
    assert store.transition(job_id, OPEN_STATES, JobState.COMMITTING)[0]
    if state != "COMMITTING":
        allowed = [JobState.COMMITTING]
        assert store.transition(job_id, allowed, JobState(state))[0]
    assert store.register_tasks(job_id, [TaskSpec("a", "h1")]) == Registration(state, "ok", [])
    reg = store.register_tasks(job_id, [TaskSpec("a", "h1"), TaskSpec("b", "h1"), TaskSpec("c", "h1")])
    assert reg == Registration(state, "closed", ["b", "c"])
    assert [t.task_id for t in store.tasks(job_id)] == ["a"]


def test_register_tasks_on_an_unknown_job(store: JobStore) -> None:
    assert store.register_tasks("f" * 32, [TaskSpec("a")]) == Registration("", "unknown", [])


# --- record_manifest ------------------------------------------------------------------------------


def test_record_manifest_accepted_then_duplicate(store: JobStore) -> None:
    job_id, _ = create(store)
    first = descriptor("t1", rows=10, size=1000, files=2)
    result = store.record_manifest(job_id, "t1", first, now=2000.0)
    assert result.accepted and result.status == "accepted" and result.detail == "1"
    job = store.require(job_id)
    assert job.state is JobState.RUNNING
    assert (
        job.manifests_accepted,
        job.tasks_done,
        job.rows_written,
        job.bytes_written,
        job.files_written,
    ) == (
        1,
        1,
        10,
        1000,
        2,
    )
    assert job.last_progress_at == 2000.0
    # a second writer for the same task loses and learns what was recorded
    dup = store.record_manifest(job_id, "t1", descriptor("t1", rows=99))
    assert dup.status == "duplicate" and not dup.accepted
    assert ManifestDescriptor.from_json(dup.detail) == first
    assert store.require(job_id).rows_written == 10
    assert store.manifests(job_id) == [first]
    second = store.record_manifest(job_id, "t2", descriptor("t2", rows=5))
    assert (second.status, second.detail) == ("accepted", "2")
    job = store.require(job_id)
    assert job.ready_to_commit and job.rows_written == 15


def test_record_empty_manifest_counts_but_is_not_listed(store: JobStore) -> None:
    job_id, _ = create(store)
    result = store.record_manifest(job_id, "t1", None)
    assert result.accepted
    assert store.manifest(job_id, "t1") == ""
    assert store.manifests(job_id) == []
    assert store.require(job_id).manifests_accepted == 1
    assert store.record_manifest(job_id, "t1", descriptor("t1")).status == "duplicate"


def test_record_manifest_for_an_unregistered_task_registers_it(store: JobStore) -> None:
    job_id, _ = create(store, tasks=[])
    assert store.record_manifest(job_id, "late-comer", descriptor("late-comer")).accepted
    assert store.require(job_id).tasks_total == 1
    assert task_spec(store, job_id, "late-comer") == TaskSpec("late-comer")


@pytest.mark.parametrize("terminal", ["complete", "fail", "cancel", "committing"])
def test_record_manifest_after_the_job_left_the_open_states_is_late(store: JobStore, terminal: str) -> None:
    job_id, _ = create(store)
    if terminal == "complete":
        assert store.transition(job_id, OPEN_STATES, JobState.COMMITTING)[0]
        assert store.complete(job_id, 7)
        expected_state = "COMPLETED"
    elif terminal == "fail":
        assert fail(store, job_id, "boom")
        expected_state = "FAILED"
    elif terminal == "cancel":
        assert store.transition(job_id, OPEN_STATES, JobState.CANCELLED)[0]
        expected_state = "CANCELLED"
    else:
        assert store.transition(job_id, OPEN_STATES, JobState.COMMITTING)[0]
        expected_state = "COMMITTING"
    result = store.record_manifest(job_id, "t1", descriptor("t1"))
    assert (result.status, result.detail) == ("late", expected_state)
    assert store.manifest(job_id, "t1") is None
    assert store.require(job_id).manifests_accepted == 0


def test_record_manifest_for_an_unknown_job(store: JobStore, r: redis.Redis) -> None:
    result = store.record_manifest("a" * 32, "t1", descriptor("t1"))
    assert (result.status, result.detail) == ("unknown", "")
    assert not r.exists(keys.job_manifests("a" * 32))  # nothing was left behind


# --- transitions ----------------------------------------------------------------------------------


def test_transition_is_compare_and_set(store: JobStore, r: redis.Redis) -> None:
    job_id, _ = create(store)
    assert store.transition(job_id, [JobState.RUNNING], JobState.COMMITTING) == (False, "PENDING")
    assert store.require(job_id).state is JobState.PENDING
    assert store.transition(job_id, OPEN_STATES, JobState.COMMITTING, {"note": "x"}) == (True, "COMMITTING")
    assert r.hget(keys.job(job_id), "note") == "x"
    # a second committer loses
    assert store.transition(job_id, OPEN_STATES, JobState.COMMITTING) == (False, "COMMITTING")
    assert fail(store, job_id, "late failure") is False  # FAILED only from the open states by default
    assert store.require(job_id).state is JobState.COMMITTING
    assert store.active_ids() == [job_id]  # not terminal yet
    assert store.transition("b" * 32, OPEN_STATES, JobState.FAILED) == (False, "")


def test_terminal_states_are_final(store: JobStore) -> None:
    job_id, _ = create(store)
    assert fail(store, job_id, "boom")
    for to in (JobState.RUNNING, JobState.COMMITTING, JobState.COMPLETED, JobState.CANCELLED):
        assert store.transition(job_id, OPEN_STATES, to) == (False, "FAILED")
    assert store.complete(job_id, 1) is False
    assert store.task_failed(job_id, "t1", "too late") is False
    assert store.touch(job_id) == "FAILED"


HEADER = b"Obj\x01 an Avro header"


def inline_descriptor(task_id: str, header: bytes = HEADER) -> ManifestDescriptor:
    return replace(descriptor(task_id), inline=InlineManifest(header_digest(header), b"sync+blocks " + task_id.encode(), header))


def test_inline_manifests_read_back_with_their_header_stored_once(store: JobStore, r: redis.Redis) -> None:
    job_id, _ = create(store, tasks=[TaskSpec("t1"), TaskSpec("t2"), TaskSpec("t3")])
    assert store.record_manifest(job_id, "t1", inline_descriptor("t1")).accepted
    assert store.record_manifest(job_id, "t2", inline_descriptor("t2")).accepted
    assert store.record_manifest(job_id, "t3", descriptor("t3")).accepted  # a file: no header
    other = b"Obj\x01 another schema's header"
    assert store.record_manifest(job_id, "t1", inline_descriptor("t1", other)).status == "duplicate"
    assert r.hgetall(keys.job_manifest_headers(job_id)) == {header_digest(HEADER): base64.b64encode(HEADER).decode()}
    by_task = {m.task_id: m for m in store.manifests(job_id)}
    for task_id in ("t1", "t2"):
        inline = by_task[task_id].inline
        assert inline is not None and inline.header == HEADER
        assert inline.file_bytes() == HEADER + b"sync+blocks " + task_id.encode()
    assert by_task["t3"].inline is None
    # a header lost or damaged in the store: the description comes back without it (the commit refuses it)
    r.hset(keys.job_manifest_headers(job_id), header_digest(HEADER), base64.b64encode(b"damaged").decode())
    assert all(m.inline is None or not m.inline.header for m in store.manifests(job_id))
    r.hset(keys.job_manifest_headers(job_id), header_digest(HEADER), "not base64!")
    assert all(m.inline is None or not m.inline.header for m in store.manifests(job_id))
    r.delete(keys.job_manifest_headers(job_id))
    assert [m.inline.header for m in store.manifests(job_id) if m.inline is not None] == [b"", b""]


def test_a_process_sends_a_jobs_header_once_and_again_if_the_store_lost_it(store: JobStore, r: redis.Redis) -> None:
    job_id, _ = create(store, tasks=[TaskSpec(f"t{i}") for i in range(4)])
    sent: list[str] = []
    record = store._record

    def spy(keys: list[str], args: list[object]) -> object:
        sent.append(str(args[7]))  # the header argument ('' when taken for stored)
        return record(keys=keys, args=args)

    store._record = spy
    assert store.record_manifest(job_id, "t0", inline_descriptor("t0")).accepted
    assert store.record_manifest(job_id, "t1", inline_descriptor("t1")).accepted
    assert sent == [base64.b64encode(HEADER).decode(), ""]  # the second record took it for stored
    r.delete(keys.job_manifest_headers(job_id))  # the store lost it (say, restored from an older copy)
    assert store.record_manifest(job_id, "t2", inline_descriptor("t2")).accepted
    assert sent[2:] == ["", base64.b64encode(HEADER).decode()]  # answered 'header', sent again with it
    assert r.hexists(keys.job_manifest_headers(job_id), header_digest(HEADER))
    # a description read back from the store has no header to send: recorded as before, nothing checked
    back = ManifestDescriptor.from_json(inline_descriptor("t3").to_json())
    assert store.record_manifest(job_id, "t3", back).accepted and sent[-1] == ""
    assert [m.task_id for m in store.manifests(job_id) if m.inline and m.inline.header == HEADER] == ["t0", "t1", "t2", "t3"]


def test_a_late_inline_manifest_stores_no_header(store: JobStore, r: redis.Redis) -> None:
    job_id, _ = create(store, tasks=[TaskSpec("t1")])
    assert fail(store, job_id, "stop")
    assert store.record_manifest(job_id, "t1", inline_descriptor("t1")).status == "late"
    assert not r.exists(keys.job_manifest_headers(job_id))


def _populate_every_key(store: JobStore, job_id: str, r: redis.Redis) -> None:
    # the job's sources and plans (a planned job), then its manifests, failures, published ids and journal
    r.hset(keys.job_sources(job_id), "h1", '["*.csv"]')
    store.register_plan(job_id, "h1", HostPlan(1, 1, 10), [TaskSpec("plan:h1:00001", "h1", (), (Piece("a.csv"),))])
    store.record_manifest(job_id, "t1", inline_descriptor("t1"))  # a manifest kept inline: its header too
    assert store.task_failed(job_id, "t2", "unreadable")
    # a dispatcher publishes the first chunk of the dispatch list (it records the messages' Celery ids)
    token = store.acquire_dispatch_lease(job_id)
    assert token is not None
    messages = [Message("floe-test:ingest", "m1", "celery-1"), Message("floe-test:ingest", "m2", "celery-2")]
    outcome, _ = store.dispatch_publish(job_id, token, store.dispatch_read(job_id).cursor, 1, messages)
    assert outcome == "ok"
    store.journal_file(job_id, "file:///wh/data/a.parquet")
    store.task_context(job_id, "t3")  # a worker starts t3: it runs (the plan filled the dispatch list)
    store.reserve_fields(job_id, "table-uuid", 1001, [FieldRequest(("new",), "long", -1)])  # schema mode evolve
    for key in keys.job_keys(job_id):
        assert r.exists(key), key


@pytest.mark.parametrize("to", [JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED])
def test_terminal_transition_sets_the_retention_on_every_job_key(
    store: JobStore, r: redis.Redis, to: JobState
) -> None:
    job_id, _ = create(store)
    _populate_every_key(store, job_id, r)
    allowed = [JobState.COMMITTING] if to is JobState.COMPLETED else OPEN_STATES
    if to is JobState.COMPLETED:
        store.transition(job_id, OPEN_STATES, JobState.COMMITTING)
    assert store.transition(job_id, allowed, to, now=5000.0) == (True, to.value)
    for key in keys.job_keys(job_id):
        assert RETENTION - 5 <= r.ttl(key) <= RETENTION, key
    job = store.require(job_id)
    assert job.state is to and job.finished_at == 5000.0
    assert job_id not in store.active_ids()
    assert store.celery_ids(job_id) == ["celery-1", "celery-2"]  # still readable until expiry


def test_handed_back_messages_join_the_celery_ids_only_while_the_job_is_open(
    store: JobStore, r: redis.Redis
) -> None:
    job_id, _ = create(store)
    assert store.add_celery_ids(job_id, ["hb-1", "hb-2"])  # a group hands two tasks back
    assert store.celery_ids(job_id) == ["hb-1", "hb-2"]  # a cancel revokes them with the rest
    assert fail(store, job_id, "stop")
    assert not store.add_celery_ids(job_id, ["hb-3"])  # a finished job takes none
    assert store.celery_ids(job_id) == ["hb-1", "hb-2"]
    assert 0 < r.ttl(keys.job_celery_ids(job_id)) <= RETENTION  # still expires with the job
    assert not store.add_celery_ids("no-such-job", ["hb-4"])
    assert not r.exists(keys.job_celery_ids("no-such-job"))


def test_the_file_journal_never_outlives_its_job(store: JobStore, r: redis.Redis) -> None:
    # Journaled while the job is open: no expiry yet (the orphan cleanup reads it at the end).
    job_id, _ = create(store)
    store.journal_file(job_id, "file:///wh/data/a.parquet")
    assert r.ttl(keys.job_files(job_id)) == -1
    # a task's first data file and its manifest are journaled in one call
    store.journal_file(job_id, "file:///wh/data/b.parquet", "file:///wh/metadata/b-m0.avro")
    assert store.journaled_files(job_id) == {
        "file:///wh/data/a.parquet", "file:///wh/data/b.parquet", "file:///wh/metadata/b-m0.avro"
    }  # fmt: skip
    # A late attempt journaling after the job finished gets the job's remaining retention ...
    store.transition(job_id, OPEN_STATES, JobState.FAILED)
    r.expire(keys.job(job_id), 100)
    store.journal_file(job_id, "file:///wh/data/late.parquet")
    assert 95 <= r.ttl(keys.job_files(job_id)) <= 100
    # ... and one after the job's keys expired gets a full retention, never a key that lives forever.
    r.delete(*keys.job_keys(job_id))
    store.journal_file(job_id, "file:///wh/data/later.parquet")
    assert RETENTION - 5 <= r.ttl(keys.job_files(job_id)) <= RETENTION
    assert store.journaled_files(job_id) == {"file:///wh/data/later.parquet"}


def test_open_and_committing_transitions_set_no_ttl(store: JobStore, r: redis.Redis) -> None:
    job_id, _ = create(store)
    _populate_every_key(store, job_id, r)
    store.transition(job_id, OPEN_STATES, JobState.COMMITTING)
    assert all(r.ttl(k) == -1 for k in keys.job_keys(job_id))
    assert store.active_ids() == [job_id]


def test_complete_stores_the_committed_pointer_with_a_longer_ttl(store: JobStore, r: redis.Redis) -> None:
    job_id, _ = create(store)
    store.transition(job_id, OPEN_STATES, JobState.COMMITTING)
    assert store.complete(job_id, 123456789012345)
    assert r.get(f"floe:committed:{job_id}") == "123456789012345"
    assert store.committed_snapshot(job_id) == 123456789012345
    ttl = r.ttl(keys.committed(job_id))
    assert RETENTION * keys.COMMITTED_TTL_FACTOR - 5 <= ttl <= RETENTION * keys.COMMITTED_TTL_FACTOR
    assert ttl > r.ttl(keys.job(job_id))
    job = store.require(job_id)
    assert job.state is JobState.COMPLETED and job.committed_snapshot_id == 123456789012345


def test_complete_without_a_snapshot(store: JobStore, r: redis.Redis) -> None:
    job_id, _ = create(store)
    store.transition(job_id, OPEN_STATES, JobState.COMMITTING)
    assert store.complete(job_id, None)
    assert not r.exists(keys.committed(job_id)) and store.committed_snapshot(job_id) is None
    assert store.require(job_id).committed_snapshot_id is None


def test_complete_requires_committing(store: JobStore) -> None:
    job_id, _ = create(store)
    assert store.complete(job_id, 9) is False
    assert store.require(job_id).state is JobState.PENDING


def test_task_failed_first_reason_wins(store: JobStore) -> None:
    job_id, _ = create(store)
    assert store.task_failed(job_id, "t1", "first", now=3000.0)
    assert not store.task_failed(job_id, "t1", "second")
    assert store.failures(job_id) == {"t1": "first"}
    job = store.require(job_id)
    assert job.tasks_failed == 1 and job.last_progress_at == 3000.0


def test_touch_moves_progress_only_while_open(store: JobStore) -> None:
    job_id, _ = create(store, now=100.0)
    assert store.touch(job_id, now=200.0) == "PENDING"
    assert store.require(job_id).last_progress_at == 200.0
    store.transition(job_id, OPEN_STATES, JobState.COMMITTING)
    assert store.touch(job_id, now=300.0) == "COMMITTING"
    assert store.require(job_id).last_progress_at == 200.0
    assert store.touch("c" * 32) == ""


# --- list -----------------------------------------------------------------------------------------


def test_list_newest_first_with_state_filter(store: JobStore) -> None:
    ids = [create(store, now=1000.0 + i)[0] for i in range(5)]
    fail(store, ids[1], "x")
    assert [j.job_id for j in store.list(10)] == ids[::-1]
    assert [j.job_id for j in store.list(2)] == [ids[4], ids[3]]
    assert [j.job_id for j in store.list(10, {JobState.FAILED})] == [ids[1]]
    assert [j.job_id for j in store.list(10, {JobState.PENDING})] == [ids[4], ids[3], ids[2], ids[0]]


def test_list_drops_expired_jobs(r: redis.Redis) -> None:
    short = JobStore(r, retention_seconds=1)
    keep, _ = create(short, now=1.0)
    gone, _ = create(short, now=2.0)
    assert fail(short, gone, "boom")
    deadline = time.monotonic() + 5
    while r.exists(keys.job(gone)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(r.exists(k) for k in keys.job_keys(gone))
    assert [j.job_id for j in short.list(10)] == [keep]
    assert r.zscore(keys.JOBS_BY_TIME, gone) is None  # dropped from the index too
    assert r.zrange(keys.JOBS_BY_TIME, 0, -1) == [keep]


def test_list_finds_live_jobs_behind_a_full_page_of_expired_ones(store: JobStore, r: redis.Redis) -> None:
    live = [create(store, tasks=[], now=1000.0 + i)[0] for i in range(30)]
    expired = [create(store, tasks=[], now=5000.0 + i)[0] for i in range(100)]  # newer than the live ones
    for job_id in expired:
        r.delete(*keys.job_keys(job_id))  # as if their retention ran out
    assert [j.job_id for j in store.list(10)] == live[::-1][:10]
