"""app.jobs.store.JobStore against a real redis-server: the commit lock and its lease, and the field ids
jobs reserve in schema mode evolve (the store's other scripts: tests/test_job_store.py)."""
from __future__ import annotations

import time

import pytest
import redis

from app import keys
from app.errors import FailedPrecondition, NotFound
from app.iceberg.schema_evolution import ROOT, FieldRequest
from app.jobs.model import OPEN_STATES, JobState
from app.jobs.store import JobStore
from tests.support.jobs import create

pytestmark = pytest.mark.integration


# --- the commit lock ------------------------------------------------------------------------------


def test_commit_lock_is_exclusive_and_released_only_by_its_holder(store: JobStore, r: redis.Redis) -> None:
    job_id, _ = create(store)
    assert not store.commit_locked(job_id)
    token = store.acquire_commit_lock(job_id)
    assert token and store.commit_locked(job_id)
    assert keys.COMMIT_LEASE_MS // 2 <= r.pttl(keys.commit_lock(job_id)) <= keys.COMMIT_LEASE_MS
    assert store.acquire_commit_lock(job_id) is None  # held
    store.release_commit_lock(job_id, "not-the-token")
    assert store.commit_locked(job_id) and r.get(keys.commit_lock(job_id)) == token
    store.release_commit_lock(job_id, token)
    assert not store.commit_locked(job_id)
    again = store.acquire_commit_lock(job_id)
    assert again and again != token
    store.release_commit_lock(job_id, token)  # a stale holder cannot release the new lock
    assert store.commit_locked(job_id)


def test_commit_lock_expires(store: JobStore) -> None:
    job_id, _ = create(store)
    assert store.acquire_commit_lock(job_id, ttl_ms=200)
    deadline = time.monotonic() + 5
    while store.commit_locked(job_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not store.commit_locked(job_id)
    assert store.acquire_commit_lock(job_id)


def test_a_lease_is_renewed_only_by_its_holder_and_never_brought_back(store: JobStore, r: redis.Redis) -> None:
    job_id, _ = create(store)
    lock = keys.commit_lock(job_id)
    token = store.acquire_commit_lock(job_id, ttl_ms=60_000)
    assert token
    r.pexpire(lock, 1_000)
    assert not store.renew_commit_lock(job_id, "not-the-token", 60_000)
    assert r.pttl(lock) <= 1_000
    assert store.renew_commit_lock(job_id, token, 60_000)
    assert r.pttl(lock) > 1_000
    r.delete(lock)  # the lease ran out
    assert not store.renew_commit_lock(job_id, token, 60_000)
    assert not store.commit_locked(job_id)  # renewing a lost lease does not take it again


def test_a_transition_under_a_lease_happens_only_while_it_is_held(store: JobStore, r: redis.Redis) -> None:
    from app.jobs.store import LEASE_LOST

    job_id, _ = create(store)
    token = store.acquire_commit_lock(job_id)
    assert token
    assert store.transition(job_id, [JobState.PENDING], JobState.COMMITTING, lease=token) == (True, "COMMITTING")
    # Given the lease ran out (its committer stalled) and another committer took the job
    r.delete(keys.commit_lock(job_id))
    other = store.acquire_commit_lock(job_id)
    assert other
    # Then the first committer can no longer move the job, nor complete it
    assert store.transition(job_id, [JobState.COMMITTING], JobState.FAILED, lease=token) == (False, LEASE_LOST)
    assert not store.complete(job_id, 42, lease=token)
    assert store.require(job_id).state == JobState.COMMITTING
    # and the one holding the lease can
    assert store.complete(job_id, 42, lease=other)
    done = store.require(job_id)
    assert done.state == JobState.COMPLETED and done.committed_snapshot_id == 42
    assert r.ttl(keys.job(job_id)) > 0 and r.ttl(keys.commit_lock(job_id)) > 0  # the lock is not a job key


def test_a_commit_lease_renews_itself_while_held_and_notices_when_it_is_lost(store: JobStore, r: redis.Redis) -> None:
    from app.jobs.lease import CommitLease

    job_id, _ = create(store)
    lock = keys.commit_lock(job_id)
    lease = CommitLease.acquire(store, job_id, ttl_ms=600)
    assert lease is not None and CommitLease.acquire(store, job_id) is None
    with lease:
        time.sleep(3)  # five times its length: only its renewals keep it
        assert r.get(lock) == lease.token and lease.held() and not lease.lost
        assert CommitLease.acquire(store, job_id) is None
        # When the lease is lost (it ran out while the committer was paused) and taken by another
        r.delete(lock)
        taken = store.acquire_commit_lock(job_id, ttl_ms=60_000)
        deadline = time.monotonic() + 30
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        # Then the holder knows, and neither renews nor releases the other's lease
        assert lease.lost and not lease.held()
    assert r.get(lock) == taken
    store.release_commit_lock(job_id, str(taken))
    with CommitLease.acquire(store, job_id, ttl_ms=600) as again:  # type: ignore[union-attr]
        assert r.get(lock) == again.token
    assert not store.commit_locked(job_id)  # released on exit


def test_locks_are_per_job(store: JobStore) -> None:
    a, _ = create(store)
    b, _ = create(store)
    assert store.acquire_commit_lock(a) and store.acquire_commit_lock(b)


# --- field reservations (schema mode evolve) ------------------------------------------------------


def test_the_first_reservation_of_a_column_wins_for_every_task(store: JobStore) -> None:
    job_id, _ = create(store)
    struct = [FieldRequest(("s",), "struct", ROOT), FieldRequest(("s", "a"), "long", ("s",))]
    first = store.reserve_fields(job_id, "tbl", 1005, [FieldRequest(("x",), "int", ROOT), *struct])
    assert [(f.path, f.field_id, f.type, f.parent_id) for f in first] == [
        (("x",), 1005, "int", ROOT), (("s",), 1006, "struct", ROOT), (("s", "a"), 1007, "long", 1006)
    ]  # fmt: skip
    # another host meets x as a long and s with one more field: x keeps its id and first type, s.b is new
    again = store.reserve_fields(
        job_id, "tbl", 1005, [FieldRequest(("x",), "long", ROOT), *struct, FieldRequest(("s", "b"), "string", ("s",))]
    )
    assert [(f.field_id, f.type, f.parent_id) for f in again] == [
        (1005, "int", ROOT), (1006, "struct", ROOT), (1007, "long", 1006), (1008, "string", 1006)
    ]  # fmt: skip
    assert store.reserved_fields(job_id) == again


def test_jobs_on_one_table_never_share_a_field_id(store: JobStore) -> None:
    a, _ = create(store)
    b, _ = create(store)
    (x,) = store.reserve_fields(a, "tbl", 1005, [FieldRequest(("x",), "long", ROOT)])
    (y,) = store.reserve_fields(b, "tbl", 1005, [FieldRequest(("y",), "long", ROOT)])
    (z,) = store.reserve_fields(b, "other-table", 1005, [FieldRequest(("z",), "long", ROOT)])
    assert (x.field_id, y.field_id, z.field_id) == (1005, 1006, 1005)
    # a floor above the counter (the table's last-column-id moved) wins
    (w,) = store.reserve_fields(a, "tbl", 3000, [FieldRequest(("w",), "long", ROOT)])
    assert w.field_id == 3000


def test_a_finished_job_reserves_nothing(store: JobStore) -> None:
    job_id, _ = create(store)
    store.transition(job_id, OPEN_STATES, JobState.CANCELLED)
    with pytest.raises(FailedPrecondition, match="is CANCELLED: it reserves no more columns"):
        store.reserve_fields(job_id, "tbl", 1005, [FieldRequest(("x",), "long", ROOT)])
    with pytest.raises(NotFound):
        store.reserve_fields("0" * 32, "tbl", 1005, [FieldRequest(("x",), "long", ROOT)])
