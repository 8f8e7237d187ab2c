"""Task manifests kept in the job store instead of a file (app/iceberg/inline_manifest.py): the worker
writes none, the commit reads them from memory, merges them like files and writes one to its own path
only when the snapshot lists it unmerged. Real catalogs (SQLite, PostgreSQL) and real files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.manifest import ManifestEntry, ManifestEntryStatus

from app.errors import FailedPrecondition
from app.iceberg import begin_distributed_snapshot, commit_distributed_snapshot
from app.iceberg.inline_manifest import InlineManifest, InlineManifestIO
from app.iceberg.manifest_reader import read_entries
from tests.support.catalogs import CatalogHandle
from tests.support.inline import LIMIT, inline_task, through_store
from tests.support.tables import local, make_table, read_ids, rows, write_csv
from workers.conversion import write_task_manifest

NO_MERGE = {"commit.manifest-merge.enabled": "false"}


def metadata_avro(table_location: str) -> set[str]:
    """The Avro files in the table's metadata folder (manifests and manifest lists)."""
    return {p.name for p in (local(table_location) / "metadata").glob("*.avro")}


def test_a_small_manifest_is_kept_not_written_and_reads_as_the_file_would(
    sqlite_catalog: CatalogHandle, tmp_path: Path
) -> None:
    table = make_table(sqlite_catalog.catalog, "ns.t", partitioned=True)
    snapshot = begin_distributed_snapshot(table)
    source = write_csv(tmp_path / "a.csv", rows(0, 40))
    kept = write_task_manifest(snapshot, table, [source], "t1", inline_bytes=LIMIT)
    assert kept is not None and kept.inline is not None
    assert not local(kept.manifest_path).exists()  # no file: its bytes are in the description
    assert all(local(p).exists() for p in kept.data_files)
    assert kept.manifest_length == len(kept.inline.file_bytes()) and len(kept.inline.body) <= LIMIT
    entries = read_entries(kept.to_manifest_file(), InlineManifestIO(table.io, {kept.manifest_path: kept.inline}))
    assert sorted(e.data_file.file_path for e in entries) == sorted(kept.data_files)
    assert all(e.status == ManifestEntryStatus.ADDED and e.snapshot_id == snapshot.snapshot_id for e in entries)
    assert sum(e.data_file.record_count for e in entries) == 40
    # the same task written as a file: the same header, the same entries but for the files' names
    written = write_task_manifest(snapshot, table, [source], "t2")
    assert written is not None and written.inline is None
    assert local(written.manifest_path).read_bytes().startswith(kept.inline.header)
    theirs = read_entries(written.to_manifest_file(), table.io)

    def but_names(e: ManifestEntry) -> str:
        d = e.data_file
        return repr((e.status, d.partition, d.record_count, dict(d.value_counts), d.lower_bounds, d.upper_bounds))

    assert sorted(map(but_names, entries)) == sorted(map(but_names, theirs))
    # over the limit (or with it at 0): a file, as before
    for limit in (len(kept.inline.body) - 1, 0):
        big = write_task_manifest(snapshot, table, [source], f"t-{limit}", inline_bytes=limit)
        assert big is not None and big.inline is None and local(big.manifest_path).exists()


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "unmerged"])
def test_a_job_of_inline_and_file_manifests_commits_once(
    catalog: CatalogHandle, tmp_path: Path, merge: bool
) -> None:
    ident = catalog.identifier("events")
    table = make_table(catalog.catalog, ident, properties={} if merge else NO_MERGE)
    before = metadata_avro(table.location())
    snapshot = begin_distributed_snapshot(table)
    inline = [inline_task(snapshot, table, tmp_path, i) for i in range(30)]
    file = write_task_manifest(snapshot, table, [write_csv(tmp_path / "f.csv", rows(1000, 7))], "f")
    assert file is not None and file.inline is None
    outcome = commit_distributed_snapshot(table, snapshot, [*inline, file], {"floe.job-id": "j"})
    table = catalog.catalog.load_table(ident)
    assert read_ids(table) == list(range(150)) + list(range(1000, 1007))
    listed = {m.manifest_path for m in table.current_snapshot().manifests(table.io)}  # type: ignore[union-attr]
    assert not any(local(m.manifest_path).exists() for m in inline)  # a task's own path is never a file
    assert set(outcome.unreferenced) == ({file.manifest_path} if merge else set())  # nothing inline to delete
    if merge:  # the job's manifests joined into one, from memory and the one file
        assert len(listed) == 1 and not listed & {m.manifest_path for m in [*inline, file]}
    else:  # listed unmerged: each inline manifest written by the commit, under a name of its attempt
        assert file.manifest_path in listed and len(listed) == 31
        written = sorted(p for p in listed if p != file.manifest_path)
        assert all(f"{snapshot.commit_uuid}-inline-a0-" in p for p in written)
        assert sorted(local(p).read_bytes() for p in written) == sorted(m.inline.file_bytes() for m in inline if m.inline)
    new = metadata_avro(table.location()) - before
    assert len(new) == (3 if merge else 32)  # the file task's manifest, the list, the merged or the 30 inline
    # committed again (a retry): found, nothing written
    assert commit_distributed_snapshot(table, snapshot, [*inline, file]).snapshot_id == snapshot.snapshot_id
    assert metadata_avro(table.location()) - before == new


def test_an_attempt_the_catalog_refuses_deletes_the_inline_manifests_it_wrote(
    sqlite_catalog: CatalogHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cat = sqlite_catalog.catalog
    table = make_table(cat, "ns.t", properties={**NO_MERGE, "commit.retry.min-wait-ms": "1"})
    snapshot = begin_distributed_snapshot(table)
    manifests = [inline_task(snapshot, table, tmp_path, i) for i in range(3)]
    real_commit = cat.commit_table
    seen: list[list[str]] = []

    def inline_written() -> list[str]:
        return sorted(n for n in metadata_avro(table.location()) if "-inline-" in n)

    def refused_once(tbl, requirements, updates):  # type: ignore[no-untyped-def]
        seen.append(inline_written())  # the attempt wrote them before its call
        if len(seen) == 1:
            raise CommitFailedException("another writer moved main")
        return real_commit(tbl, requirements, updates)

    monkeypatch.setattr(cat, "commit_table", refused_once)
    outcome = commit_distributed_snapshot(table, snapshot, manifests)
    assert outcome.attempts == 2 and [len(names) for names in seen] == [3, 3]
    assert all("-inline-a0-" in n for n in seen[0]) and all("-inline-a1-" in n for n in seen[1])
    assert inline_written() == seen[1]  # the refused attempt's were deleted
    assert read_ids(cat.load_table("ns.t")) == list(range(15))


def test_an_inline_manifest_whose_header_is_lost_is_refused_before_anything_is_written(
    sqlite_catalog: CatalogHandle, tmp_path: Path
) -> None:
    table = make_table(sqlite_catalog.catalog, "ns.t", properties=NO_MERGE)
    snapshot = begin_distributed_snapshot(table)
    good = inline_task(snapshot, table, tmp_path, 0)
    assert good.inline is not None
    lost = replace(inline_task(snapshot, table, tmp_path, 1), inline=InlineManifest(good.inline.digest, b"x"))
    before = metadata_avro(table.location())
    with pytest.raises(FailedPrecondition) as info:
        commit_distributed_snapshot(table, snapshot, [good, lost])
    assert str(info.value) == (
        f"manifest {lost.manifest_path} of task 't1' is kept in the job store, but its header "
        f"(digest {good.inline.digest}) is missing or damaged there; the job cannot be committed"
    )
    assert metadata_avro(table.location()) == before
    assert sqlite_catalog.catalog.load_table("ns.t").current_snapshot() is None


def test_the_store_round_trip_keeps_every_byte(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    table = make_table(sqlite_catalog.catalog, "ns.t")
    snapshot = begin_distributed_snapshot(table)
    m = write_task_manifest(snapshot, table, [write_csv(tmp_path / "a.csv", rows(0, 3))], "t", inline_bytes=LIMIT)
    assert m is not None and m.inline is not None
    assert through_store(m) == m


@pytest.mark.parametrize("ends", ["cancelled", "committed"])
def test_cleanup_deletes_no_path_of_an_inline_manifest(
    sqlite_catalog: CatalogHandle, tmp_path: Path, redis_server: object, monkeypatch: pytest.MonkeyPatch, ends: str
) -> None:
    # A task's own manifest path was journaled (with its first data file) but never written: neither the
    # cleanup of a failed job nor the one after a commit sends a delete for it (on S3, a request each).
    import redis

    from app.jobs.cleanup import JobFiles
    from app.jobs.model import JobState, TaskSpec
    from app.jobs.store import JobStore
    from tests.support.jobs import create, fail

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)  # type: ignore[attr-defined]
    store = JobStore(client, 3600)
    table = make_table(sqlite_catalog.catalog, "ns.t")
    job_id, _ = create(store, tasks=[TaskSpec("t0"), TaskSpec("t1")])
    snapshot = begin_distributed_snapshot(table)
    manifests = []
    for i in range(2):
        source = write_csv(tmp_path / f"s{i}.csv", rows(i * 5, 5))
        m = write_task_manifest(
            snapshot, table, [source], f"t{i}", on_file=lambda *p: store.journal_file(job_id, *p), inline_bytes=LIMIT
        )
        assert m is not None and m.inline is not None and store.record_manifest(job_id, f"t{i}", m).accepted
        manifests.append(m)
    assert {m.manifest_path for m in manifests} <= store.journaled_files(job_id)
    deleted: list[str] = []
    real_delete = type(table.io).delete

    def spy(io: object, location: object) -> None:
        deleted.append(str(location))
        real_delete(io, location)  # type: ignore[arg-type]

    monkeypatch.setattr(type(table.io), "delete", spy)
    files = JobFiles(store, lambda ref: sqlite_catalog.catalog.load_table("ns.t"))
    if ends == "cancelled":
        assert fail(store, job_id, "stop")
        files.after_failure(job_id)
    else:
        outcome = commit_distributed_snapshot(table, snapshot, store.manifests(job_id))
        assert store.transition(job_id, [JobState.PENDING, JobState.RUNNING], JobState.COMMITTING)[0]
        assert store.complete(job_id, outcome.snapshot_id)
        files.after_commit(job_id, table, store.manifests(job_id), list(outcome.to_delete))
        assert read_ids(sqlite_catalog.catalog.load_table("ns.t")) == list(range(10))
    assert not {m.manifest_path for m in manifests} & set(deleted)
    data = {p for m in manifests for p in m.data_files}
    assert (data <= set(deleted)) == (ends == "cancelled")  # a cancel deletes the data files, a commit keeps them
    client.close()
