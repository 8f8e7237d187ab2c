"""The distributed snapshot: reserve, write manifests in separate OS processes, commit one snapshot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pyiceberg.exceptions import CommitStateUnknownException
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.table import Table

from app.errors import CommitStateUnknown, FailedPrecondition, InvalidArgument
from app.iceberg import DistributedSnapshot, begin_distributed_snapshot, commit_distributed_snapshot
from tests.support.catalogs import CatalogHandle
from tests.support.tables import make_table, read_ids, rows, write_csv, write_jsonl, write_parquet
from workers.conversion import ManifestDescriptor, write_task_manifest

ROOT = Path(__file__).resolve().parent.parent


def run_task_process(
    handle: CatalogHandle, ident: str, snapshot: DistributedSnapshot, paths: list[Path], task_id: str
) -> subprocess.Popen[str]:
    request = {
        "catalog": handle.properties,
        "table": ident,
        "snapshot": snapshot.to_dict(),
        "paths": [str(p) for p in paths],
        "task_id": task_id,
    }
    request_file = paths[0].parent / f"{task_id}.request.json"
    request_file.write_text(json.dumps(request))
    with request_file.open() as stdin:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.procs.write_task"],
            cwd=ROOT,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def collect(procs: list[subprocess.Popen[str]]) -> list[ManifestDescriptor]:
    """Every process's manifest description; all are waited for (and their pipes closed) before any
    failure is reported, so a failed one leaves no process or open pipe behind for later tests."""
    finished = [(proc, *proc.communicate(timeout=120)) for proc in procs]
    for proc, _, err in finished:
        assert proc.returncode == 0, err
    return [ManifestDescriptor.from_dict(json.loads(out)) for _, out, _ in finished]


def data_file_entries(table: Table, snapshot_id: int) -> list:
    snap = table.metadata.snapshot_by_id(snapshot_id)
    assert snap is not None
    return [e for m in snap.manifests(table.io) for e in m.fetch_manifest_entry(table.io)]


def test_snapshot_description_round_trips_through_json(sqlite_catalog: CatalogHandle) -> None:
    table = make_table(sqlite_catalog.catalog, "ns.t")
    table.append(__import__("pyarrow").Table.from_pylist(rows(0, 3), schema=table.schema().as_arrow()))
    table = sqlite_catalog.catalog.load_table("ns.t")
    snap = begin_distributed_snapshot(table, {"origin": "test"})
    again = DistributedSnapshot.from_dict(json.loads(json.dumps(snap.to_dict())))
    assert again == snap
    assert snap.parent_snapshot_id == table.metadata.current_snapshot().snapshot_id  # type: ignore[union-attr]
    assert snap.table_uuid == str(table.metadata.table_uuid)
    assert snap.format_version == 2 and snap.schema_id == 0 and snap.spec_id == 0
    assert snap.metadata_location == table.metadata_location


@pytest.mark.parametrize("partitioned", [False, True], ids=["unpartitioned", "partitioned"])
def test_three_processes_write_one_snapshot(
    catalog: CatalogHandle, tmp_path: Path, partitioned: bool
) -> None:
    # Given a table with one earlier append and three hosts' worth of sources in three formats
    ident = catalog.identifier("events")
    table = make_table(catalog.catalog, ident, partitioned=partitioned)
    table.append(__import__("pyarrow").Table.from_pylist(rows(10_000, 5), schema=table.schema().as_arrow()))
    table = catalog.catalog.load_table(ident)
    before = len(table.metadata.snapshots)
    sources = {
        "task-1": [
            write_csv(tmp_path / "h1" / "a.csv", rows(0, 300)),
            write_csv(tmp_path / "h1" / "b.csv", rows(300, 200)),
        ],
        "task-2": [write_jsonl(tmp_path / "h2" / "c.jsonl", rows(500, 250))],
        "task-3": [write_parquet(tmp_path / "h3" / "d.parquet", rows(750, 250))],
    }
    snapshot = begin_distributed_snapshot(table)
    # When three OS processes each write one task's manifest and one commit follows
    procs = [run_task_process(catalog, ident, snapshot, paths, task) for task, paths in sources.items()]
    manifests = collect(procs)
    committed = commit_distributed_snapshot(table, snapshot, manifests, {"floe.job-id": "job-1"}).snapshot_id
    # Then every row is there once, in one new snapshot whose summary totals are exact
    table = catalog.catalog.load_table(ident)
    assert committed == snapshot.snapshot_id
    assert read_ids(table) == list(range(1000)) + list(range(10_000, 10_005))
    assert len(table.metadata.snapshots) == before + 1
    snap = table.metadata.current_snapshot()
    assert (
        snap is not None
        and snap.snapshot_id == committed
        and snap.parent_snapshot_id == snapshot.parent_snapshot_id
    )
    entries = data_file_entries(table, committed)
    new = [e for e in entries if e.snapshot_id == committed]
    summary = snap.summary
    assert summary is not None
    assert summary["floe.job-id"] == "job-1"
    assert summary["added-records"] == "1000"
    assert int(summary["added-data-files"]) == len(new) == sum(m.added_files_count for m in manifests)
    assert int(summary["added-files-size"]) == sum(e.data_file.file_size_in_bytes for e in new)
    assert summary["total-records"] == "1005"
    assert int(summary["total-data-files"]) == len(entries)
    assert int(summary["total-files-size"]) == sum(e.data_file.file_size_in_bytes for e in entries)
    if partitioned:
        partitions = {table.spec().partition_to_path(e.data_file.partition, table.schema()) for e in new}
        assert summary["changed-partition-count"] == str(len(partitions)) == "6"
        # a task's sources are combined: at most one file per partition per task
        assert len(new) <= 3 * 6
    else:
        assert summary.get("changed-partition-count") is None
        assert len(new) == 3


def test_concurrent_append_is_rebased_with_the_new_sequence_number(
    catalog: CatalogHandle, tmp_path: Path
) -> None:
    import pyarrow as pa

    ident = catalog.identifier("events")
    table = make_table(catalog.catalog, ident, partitioned=True)
    snapshot = begin_distributed_snapshot(table)
    manifest = write_task_manifest(snapshot, table, [write_csv(tmp_path / "a.csv", rows(0, 100))], "t1")
    assert manifest is not None
    # Given a plain append that lands between begin and commit
    other = catalog.catalog.load_table(ident)
    other.append(pa.Table.from_pylist(rows(5000, 10), schema=other.schema().as_arrow()))
    # When the distributed snapshot commits
    committed = commit_distributed_snapshot(table, snapshot, [manifest]).snapshot_id
    # Then it re-parented onto the append, and both writes are present exactly once
    table = catalog.catalog.load_table(ident)
    snap = table.metadata.snapshot_by_id(committed)
    assert snap is not None
    appended_id = other.metadata.current_snapshot().snapshot_id  # type: ignore[union-attr]
    assert snap.parent_snapshot_id == appended_id
    assert snap.sequence_number == 2
    assert read_ids(table) == list(range(100)) + list(range(5000, 5010))
    assert snap.summary is not None and snap.summary["total-records"] == "110"
    # and every new manifest and entry carries the new sequence number
    for m in snap.manifests(table.io):
        if m.added_snapshot_id == committed:
            assert m.sequence_number == 2 and m.min_sequence_number == 2
            for e in m.fetch_manifest_entry(table.io):
                assert e.sequence_number == 2 and e.file_sequence_number == 2
        else:
            assert m.sequence_number == 1


def test_commit_retries_after_repeated_conflicts_keeping_the_reserved_id(
    sqlite_catalog: CatalogHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa

    cat = sqlite_catalog.catalog
    table = make_table(cat, "ns.t", properties={"commit.retry.min-wait-ms": "1"})
    snapshot = begin_distributed_snapshot(table)
    manifest = write_task_manifest(snapshot, table, [write_csv(tmp_path / "a.csv", rows(0, 20))], "t1")
    assert manifest is not None
    real_commit = cat.commit_table
    interfering = {"left": 3}

    def commit_with_interference(tbl, requirements, updates):  # type: ignore[no-untyped-def]
        # Another writer moves main just before each of our first three attempts reaches the catalog.
        if interfering["left"] > 0 and not interfering.get("busy"):
            interfering["left"] -= 1
            interfering["busy"] = 1
            fresh = cat.load_table("ns.t")
            fresh.append(
                pa.Table.from_pylist(rows(900 + interfering["left"], 1), schema=fresh.schema().as_arrow())
            )
            interfering["busy"] = 0
        return real_commit(tbl, requirements, updates)

    monkeypatch.setattr(cat, "commit_table", commit_with_interference)
    committed = commit_distributed_snapshot(table, snapshot, [manifest]).snapshot_id
    table = cat.load_table("ns.t")
    assert committed == snapshot.snapshot_id
    assert read_ids(table) == list(range(20)) + [900, 901, 902]
    assert table.metadata.current_snapshot().sequence_number == 4  # type: ignore[union-attr]
    # failed attempts' manifest lists were cleaned up, the committed one is attempt 3
    lists = sorted(
        p.name for p in (Path(table.location().removeprefix("file://")) / "metadata").glob("snap-*")
    )
    ours = [n for n in lists if n.startswith(f"snap-{committed}-")]
    assert ours == [f"snap-{committed}-3-{snapshot.commit_uuid}.avro"]


def test_commit_twice_gives_one_snapshot(catalog: CatalogHandle, tmp_path: Path) -> None:
    ident = catalog.identifier("events")
    table = make_table(catalog.catalog, ident)
    snapshot = begin_distributed_snapshot(table)
    manifest = write_task_manifest(snapshot, table, [write_csv(tmp_path / "a.csv", rows(0, 50))], "t1")
    assert manifest is not None
    first = commit_distributed_snapshot(table, snapshot, [manifest], {"floe.job-id": "j"}).snapshot_id
    second = commit_distributed_snapshot(table, snapshot, [manifest], {"floe.job-id": "j"}).snapshot_id
    table = catalog.catalog.load_table(ident)
    assert first == second == snapshot.snapshot_id
    assert len(table.metadata.snapshots) == 1
    assert read_ids(table) == list(range(50))


def test_commit_whose_catalog_call_lands_but_raises_is_found(
    catalog: CatalogHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ident = catalog.identifier("events")
    table = make_table(catalog.catalog, ident)
    snapshot = begin_distributed_snapshot(table)
    manifest = write_task_manifest(snapshot, table, [write_csv(tmp_path / "a.csv", rows(0, 50))], "t1")
    assert manifest is not None
    real_commit = catalog.catalog.commit_table

    def lands_then_raises(tbl, requirements, updates):  # type: ignore[no-untyped-def]
        real_commit(tbl, requirements, updates)
        raise CommitStateUnknownException("connection reset after the catalog applied the commit")

    monkeypatch.setattr(catalog.catalog, "commit_table", lands_then_raises)
    assert commit_distributed_snapshot(table, snapshot, [manifest]).snapshot_id == snapshot.snapshot_id
    monkeypatch.undo()
    assert commit_distributed_snapshot(table, snapshot, [manifest]).snapshot_id == snapshot.snapshot_id
    table = catalog.catalog.load_table(ident)
    assert len(table.metadata.snapshots) == 1
    assert read_ids(table) == list(range(50))


def test_unknown_outcome_that_did_not_land_deletes_nothing(
    sqlite_catalog: CatalogHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cat = sqlite_catalog.catalog
    table = make_table(cat, "ns.t")
    snapshot = begin_distributed_snapshot(table)
    manifest = write_task_manifest(snapshot, table, [write_csv(tmp_path / "a.csv", rows(0, 10))], "t1")
    assert manifest is not None

    def never_lands(tbl, requirements, updates):  # type: ignore[no-untyped-def]
        raise CommitStateUnknownException("timed out waiting for the catalog")

    monkeypatch.setattr(cat, "commit_table", never_lands)
    with pytest.raises(CommitStateUnknown, match="nothing was deleted"):
        commit_distributed_snapshot(table, snapshot, [manifest])
    for path in [manifest.manifest_path, *manifest.data_files]:
        assert Path(path.removeprefix("file://")).exists()
    monkeypatch.undo()
    # a later retry of the same commit lands it once
    assert commit_distributed_snapshot(table, snapshot, [manifest]).snapshot_id == snapshot.snapshot_id
    assert read_ids(cat.load_table("ns.t")) == list(range(10))


def test_two_hundred_small_manifests_merge_into_few(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    import pyarrow as pa

    cat = sqlite_catalog.catalog
    table = make_table(
        cat,
        "ns.t",
        properties={"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "50"},
    )
    table.append(pa.Table.from_pylist(rows(100_000, 5), schema=table.schema().as_arrow()))
    table = cat.load_table("ns.t")
    snapshot = begin_distributed_snapshot(table)
    manifests = []
    for i in range(200):
        m = write_task_manifest(snapshot, table, [write_csv(tmp_path / f"s{i}.csv", rows(i * 5, 5))], f"t{i}")
        assert m is not None
        manifests.append(m)
    outcome = commit_distributed_snapshot(table, snapshot, manifests)
    committed = outcome.snapshot_id
    table = cat.load_table("ns.t")
    snap = table.metadata.snapshot_by_id(committed)
    assert snap is not None
    listed = snap.manifests(table.io)
    # the job's 200 joined into one; with 2 manifests in its bin (< min-count) the older one stays as it is
    assert [m.added_snapshot_id for m in listed] == [committed, table.metadata.snapshots[0].snapshot_id]
    assert sorted(outcome.unreferenced) == sorted(m.manifest_path for m in manifests)
    assert read_ids(table) == list(range(1000)) + list(range(100_000, 100_005))
    ours, older = (list(m.fetch_manifest_entry(table.io)) for m in listed)
    assert len(ours) == 200 and all(
        e.status == ManifestEntryStatus.ADDED and e.sequence_number == 2 and e.snapshot_id == committed for e in ours
    )
    assert len(older) == 1 and older[0].sequence_number == 1
    assert snap.summary is not None and snap.summary["added-data-files"] == "200"
    # the merged-away worker manifests are the caller's to delete: the commit keeps them
    assert all(Path(m.manifest_path.removeprefix("file://")).exists() for m in manifests)


def test_merged_away_manifests_can_be_left_to_the_caller(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    # The commit lists the worker manifests it merged away instead of deleting them (the coordinator
    # deletes them after marking the job complete); a retry that finds the commit on main lists the
    # same ones.
    cat = sqlite_catalog.catalog
    merging = {"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "10"}
    table = make_table(cat, "ns.t", properties=merging)
    snapshot = begin_distributed_snapshot(table)
    manifests = [
        write_task_manifest(snapshot, table, [write_csv(tmp_path / f"s{i}.csv", rows(i * 5, 5))], f"t{i}")
        for i in range(12)
    ]
    paths = sorted(m.manifest_path for m in manifests if m is not None)
    outcome = commit_distributed_snapshot(table, snapshot, manifests)  # type: ignore[arg-type]
    committed = outcome.snapshot_id
    assert sorted(outcome.unreferenced) == paths
    assert all(Path(p.removeprefix("file://")).exists() for p in paths)
    table = cat.load_table("ns.t")
    assert [m.manifest_path for m in table.current_snapshot().manifests(table.io)] != paths  # type: ignore[union-attr]
    assert read_ids(table) == list(range(60))
    again = commit_distributed_snapshot(table, snapshot, manifests)  # type: ignore[arg-type]
    assert again.snapshot_id == committed and again.attempts == 0
    assert sorted(again.unreferenced) == paths
    assert all(Path(p.removeprefix("file://")).exists() for p in paths)  # the caller deletes them
    assert read_ids(cat.load_table("ns.t")) == list(range(60))


def test_v3_table_is_refused_before_any_file_is_written(
    sqlite_catalog: CatalogHandle, tmp_path: Path
) -> None:
    cat = sqlite_catalog.catalog
    # pyiceberg 0.12 cannot create v3 tables: register v3 metadata as another engine would write it
    v2 = make_table(cat, "ns.t2")
    metadata = json.loads(Path(v2.metadata_location.removeprefix("file://")).read_text())
    metadata.update({"format-version": 3, "next-row-id": 0})
    v3_path = Path(v2.metadata_location.removeprefix("file://")).with_name("00000-v3.metadata.json")
    v3_path.write_text(json.dumps(metadata))
    table = cat.register_table("ns.t", v3_path.as_uri())
    assert table.metadata.format_version == 3
    with pytest.raises(FailedPrecondition, match="format version 3"):
        begin_distributed_snapshot(table)
    fake = DistributedSnapshot.from_dict(
        {**begin_distributed_snapshot(v2).to_dict(), "table_uuid": str(table.metadata.table_uuid)}
    )
    with pytest.raises(FailedPrecondition, match="format version 3"):
        write_task_manifest(fake, table, [write_csv(tmp_path / "a.csv", rows(0, 5))], "t1")
    data_dir = Path(table.location().removeprefix("file://")) / "data"
    assert not data_dir.exists() or not any(data_dir.rglob("*"))


def test_manifest_of_another_snapshot_is_refused(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    cat = sqlite_catalog.catalog
    table = make_table(cat, "ns.t")
    first = begin_distributed_snapshot(table)
    second = begin_distributed_snapshot(table)
    manifest = write_task_manifest(first, table, [write_csv(tmp_path / "a.csv", rows(0, 5))], "t1")
    assert manifest is not None
    with pytest.raises(InvalidArgument, match=f"belongs to snapshot {first.snapshot_id}"):
        commit_distributed_snapshot(table, second, [manifest])
    with pytest.raises(InvalidArgument, match="no manifests"):
        commit_distributed_snapshot(table, first, [])
    with pytest.raises(InvalidArgument, match="listed twice"):
        commit_distributed_snapshot(table, first, [manifest, manifest])
    with pytest.raises(InvalidArgument, match="'added-records' is reserved"):
        commit_distributed_snapshot(table, first, [manifest], {"added-records": "1"})
    assert cat.load_table("ns.t").metadata.current_snapshot() is None


def test_bad_commit_retry_property_is_refused(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    cat = sqlite_catalog.catalog
    table = make_table(cat, "ns.t", properties={"commit.retry.num-retries": "many"})
    snapshot = begin_distributed_snapshot(table)
    manifest = write_task_manifest(snapshot, table, [write_csv(tmp_path / "a.csv", rows(0, 5))], "t1")
    assert manifest is not None
    with pytest.raises(InvalidArgument, match="commit.retry.num-retries='many' is not an integer"):
        commit_distributed_snapshot(table, snapshot, [manifest])


def test_replaced_table_is_refused(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    cat = sqlite_catalog.catalog
    table = make_table(cat, "ns.t")
    snapshot = begin_distributed_snapshot(table)
    manifest = write_task_manifest(snapshot, table, [write_csv(tmp_path / "a.csv", rows(0, 5))], "t1")
    assert manifest is not None
    cat.drop_table("ns.t")
    replaced = make_table(cat, "ns.t")
    with pytest.raises(FailedPrecondition, match="was replaced"):
        commit_distributed_snapshot(replaced, snapshot, [manifest])


def test_merging_a_jobs_own_manifests_concatenates_them(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    # Given a fresh partitioned table (no parent manifests) and 60 task manifests over 6 partitions
    from pyiceberg.manifest import construct_partition_summaries

    cat = sqlite_catalog.catalog
    table = make_table(
        cat, "ns.t", partitioned=True,
        properties={"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "20"},
    )
    snapshot = begin_distributed_snapshot(table)
    manifests = []
    for i in range(60):
        m = write_task_manifest(snapshot, table, [write_csv(tmp_path / f"s{i}.csv", rows(i * 7, 7))], f"t{i}")
        assert m is not None
        manifests.append(m)
    # When they are committed with merging on
    outcome = commit_distributed_snapshot(table, snapshot, manifests)
    committed = outcome.snapshot_id
    # Then one manifest holds every entry, ADDED with the new sequence number, and the right summaries
    table = cat.load_table("ns.t")
    snap = table.metadata.snapshot_by_id(committed)
    assert snap is not None
    (merged,) = snap.manifests(table.io)
    entries = merged.fetch_manifest_entry(table.io)
    assert len(entries) == merged.added_files_count == sum(m.added_files_count for m in manifests)
    assert all(e.status == ManifestEntryStatus.ADDED and e.sequence_number == 1 for e in entries)
    assert merged.added_rows_count == 420 and read_ids(table) == list(range(420))
    expected = construct_partition_summaries(table.spec(), table.schema(), [e.data_file.partition for e in entries])
    assert [(p.contains_null, p.lower_bound, p.upper_bound) for p in merged.partitions or []] == [
        (p.contains_null, p.lower_bound, p.upper_bound) for p in expected
    ]
    # and every task manifest is left to the caller to delete
    assert sorted(outcome.unreferenced) == sorted(m.manifest_path for m in manifests)
