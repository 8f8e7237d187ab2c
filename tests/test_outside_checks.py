"""Outside checks: Floe seen by software that shares none of its Python code.

1. A Node.js gRPC client (tests/js/reflect_coordinator.js, @grpc/grpc-js + grpc-js-reflection-client)
   learns api.Coordinator through server reflection only, starts a job and reads its status.
2. Two Iceberg readers that are not pyiceberg read tables Floe committed, by their metadata location
   alone, in a process where pyiceberg is never imported: iceberg-rust (pyiceberg-core's DataFusion
   table provider, tests/engines/iceberg_rust_query.py) and DuckDB's C++ iceberg extension
   (tests/engines/duckdb_query.py).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from app.iceberg import begin_distributed_snapshot, commit_distributed_snapshot
from tests.support.catalogs import CatalogHandle
from tests.support.system import ROOT, Cluster
from tests.support.tables import make_table, rows, write_csv, write_jsonl, write_parquet
from workers.conversion import write_task_manifest

pytestmark = pytest.mark.integration

JS_DIR = ROOT / "tests" / "js"
JS_CLIENT = JS_DIR / "reflect_coordinator.js"
ENGINE_SCRIPTS = {
    "iceberg-rust": ROOT / "tests" / "engines" / "iceberg_rust_query.py",
    "duckdb": ROOT / "tests" / "engines" / "duckdb_query.py",
}
DATAFUSION_PIN = "datafusion==53.0.0"
DUCKDB_PINS = "duckdb==1.5.5 duckdb-extension-iceberg==1.5.5 duckdb-extension-avro==1.5.5 duckdb-extensions==1.5.5"


def _require(missing: str | None, fix: str) -> None:
    """Fail under CI, skip elsewhere, when an outside tool is missing."""
    if missing is None:
        return
    message = f"{missing}: {fix}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# --- 1. a Node.js client that knows the coordinator only through reflection -----------------------


def _node() -> str:
    node = shutil.which("node")
    _require(None if node else "node is not on PATH", "install Node.js 18+ (Node 20 is what CI uses)")
    _require(
        None
        if (JS_DIR / "node_modules" / "grpc-js-reflection-client").is_dir()
        else "tests/js/node_modules is missing",
        "run `make js-deps` (npm ci --prefix tests/js)",
    )
    assert node is not None
    return node


def _json_lines(text: str) -> dict[str, dict[str, Any]]:
    steps: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if line.startswith("{"):
            obj = json.loads(line)
            steps[obj["step"]] = obj
    return steps


def test_node_client_discovers_the_coordinator_by_reflection_and_starts_a_job(
    cluster: Cluster, tmp_path: Path
) -> None:
    node = _node()
    make_table(cluster.catalog, "demo.events")
    cluster.start_coordinator()
    # Run from an empty directory: the client has nothing but its own packages and the address.
    workdir = tmp_path / "node-cwd"
    workdir.mkdir()
    done = subprocess.run(
        [node, str(JS_CLIENT), cluster.target],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\n{cluster.logs()}"
    steps = _json_lines(done.stdout)
    # reflection listed the service, and described its methods
    assert "api.Coordinator" in steps["services"]["services"]
    methods = {m["name"]: m for m in steps["methods"]["methods"]}
    assert methods["StartJob"]["path"] == "/api.Coordinator/StartJob"
    assert methods["GetJobStatus"]["path"] == "/api.Coordinator/GetJobStatus"
    assert methods["WatchJob"]["server_streaming"] is True
    # StartJob with the walkthrough's payload: a 32-hex job id and a reserved snapshot id
    started = steps["StartJob"]["response"]
    job_id = started["job_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", job_id), started
    snapshot_id = int(started["snapshot"]["snapshot_id"])  # int64 travels as a decimal string
    assert snapshot_id > 0 and started["created"] is True
    assert started["snapshot"]["metadata_location"].endswith(".metadata.json")
    # GetJobStatus of that job: PENDING (no tasks were given), same reservation
    status = steps["GetJobStatus"]["response"]
    assert status["job_id"] == job_id and status["state"] == "PENDING"
    assert int(status["snapshot"]["snapshot_id"]) == snapshot_id
    assert status["requester"] == "demo-user" and status["job_timeout_seconds"] == 600
    assert status["table"] == {"catalog": "default", "namespace": "demo", "table": "events"}
    # a malformed job id is INVALID_ARGUMENT (3)
    bad = steps["GetJobStatus-invalid"]
    assert bad["code"] == 3 and bad["code_name"] == "INVALID_ARGUMENT", bad
    assert "not a job id" in str(bad["details"])
    # and the Python side sees the job the Node client started
    with cluster.client() as client:
        seen = client.status(job_id)
    assert seen.snapshot.snapshot_id == snapshot_id and seen.requester == "demo-user"


def test_node_client_follows_the_walkthrough_and_a_late_assign_retry_is_acknowledged(
    topology_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = topology_cluster  # SQLite + file://, and the REST catalog + S3
    # Given a coordinator and a `floe worker` (Celery worker + api.Worker facade) with each task's data
    node = _node()
    make_table(cluster.catalog, "demo.events")
    write_csv(cluster.data_dir("worker-1") / "task-1" / "a.csv", rows(0, 30))
    write_csv(cluster.data_dir("worker-1") / "task-2" / "b.csv", rows(30, 20))
    cluster.start_coordinator()
    _, worker_target = cluster.start_facade_worker("worker-1")
    workdir = tmp_path / "node-cwd"
    workdir.mkdir()
    # When a grpc-js client that knows the API only by reflection follows the walkthrough and then
    # retries its AssignTasks after the commit (its first answer was lost), and sends a new id late
    done = subprocess.run(
        [node, str(JS_DIR / "walkthrough.js"), cluster.target, worker_target, "worker-1"],
        cwd=workdir, capture_output=True, text=True, timeout=150, env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\n{cluster.logs()}"
    steps = _json_lines(done.stdout)
    # Then the walkthrough ran: assigned, repeated harmlessly, ready, committed
    assert steps["AssignTasks"]["response"]["accepted_task_ids"] == ["task-1", "task-2"]
    again = steps["AssignTasks-again"]["response"]
    assert again["accepted_task_ids"] == [] and sorted(again["already_assigned_task_ids"]) == ["task-1", "task-2"]
    assert steps["GetJobStatus-ready"]["response"]["ready_to_commit"] is True
    committed = steps["CommitJob"]["response"]
    assert committed["status"]["state"] == "COMPLETED"
    # the late retry is acknowledged: known, nothing run again, the recorded manifests re-reported
    late = steps["AssignTasks-late-retry"]
    assert "code" not in late, late
    assert late["response"]["job_state"] == "COMPLETED" and late["response"]["accepted_task_ids"] == []
    assert sorted(late["response"]["already_assigned_task_ids"]) == ["task-1", "task-2"]
    # (a map reaches a reflection-built grpc-js client as its wire form: repeated {key, value} entries)
    recorded = {e["key"]: e["value"] for e in late["response"]["recorded_manifests"]}
    assert sorted(recorded) == ["task-1", "task-2"] and all(v.endswith(".avro") for v in recorded.values())
    # a new id on the completed job is refused, naming it, and nothing changed
    new = steps["AssignTasks-late-new"]
    assert new["code_name"] == "FAILED_PRECONDITION", new
    assert "it takes no more tasks; new task ids refused: task-3" in new["details"]
    final = steps["GetJobStatus-final"]["response"]
    assert final["state"] == "COMPLETED" and final["tasks_total"] == 2 and final["rows_written"] == "50"
    table = cluster.catalog.load_table("demo.events")
    assert len(table.snapshots()) == 1 and table.scan().to_arrow().num_rows == 50


# --- 2. iceberg-rust reads what Floe committed ---------------------------------------------------


def _engine_available(engine: str) -> None:
    missing = None
    if engine == "duckdb":
        for module in ("duckdb", "duckdb_extensions", "duckdb_extension_iceberg", "duckdb_extension_avro"):
            if importlib.util.find_spec(module) is None:
                missing = f"the {module} package is not installed"
        _require(missing, f"pip install {DUCKDB_PINS}")
        return
    import pyiceberg_core

    if importlib.util.find_spec("datafusion") is None:
        missing = "the datafusion package is not installed"
    elif not hasattr(getattr(pyiceberg_core, "datafusion", None), "IcebergDataFusionTable"):
        missing = "this pyiceberg-core has no DataFusion table provider (iceberg-rust)"
    _require(missing, f"pip install '{DATAFUSION_PIN}' (it must match pyiceberg-core's datafusion-ffi)")


def _engine(engine: str, metadata_location: str, *statements: str) -> list[list[dict[str, Any]]]:
    done = subprocess.run(
        [sys.executable, str(ENGINE_SCRIPTS[engine]), metadata_location, *statements],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    crashed = (
        f"the engine died of signal {-done.returncode}: a datafusion whose FFI does not match "
        f"pyiceberg-core's crashes like this ({DATAFUSION_PIN} matches pyiceberg-core 0.10.1)\n"
        if done.returncode < 0 and engine == "iceberg-rust"
        else ""
    )
    assert done.returncode == 0, f"{crashed}stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    answer = json.loads(done.stdout)
    assert answer["engine"]["pyiceberg_modules_loaded"] == []
    results: list[list[dict[str, Any]]] = answer["results"]
    return results


TOTALS = (
    "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(id) AS id_sum, sum(amount) AS amount_sum FROM t"
)
BY_CATEGORY = (
    "SELECT category, count(*) AS n, sum(amount) AS amount_sum FROM t GROUP BY category ORDER BY category"
)
# a predicate on both partition source columns (identity(category), day(ts)); pyiceberg-core 0.10's
# provider does not push it into the scan, so DataFusion filters what iceberg-rust read
FILTERED = (
    "SELECT count(*) AS n, sum(id) AS id_sum FROM t "
    "WHERE category = 'b' AND ts >= TIMESTAMP '2024-01-02 00:00:00'"
)
DAY2 = dt.datetime(2024, 1, 2)


def _expected(written: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """What TOTALS, BY_CATEGORY and FILTERED must return, computed from the rows that were written."""
    ids = [r["id"] for r in written]
    picked = [r for r in written if r["category"] == "b" and r["ts"] >= DAY2]
    return [
        [
            {
                "n": len(written),
                "ids": len(set(ids)),
                "id_sum": sum(ids),
                "amount_sum": sum(r["amount"] for r in written),
            }
        ],
        [
            {
                "category": c,
                "n": sum(1 for r in written if r["category"] == c),
                "amount_sum": sum(r["amount"] for r in written if r["category"] == c),
            }
            for c in sorted({r["category"] for r in written})
        ],
        [{"n": len(picked), "id_sum": sum(r["id"] for r in picked)}],
    ]


ENGINES = pytest.mark.parametrize("engine", sorted(ENGINE_SCRIPTS))


@ENGINES
@pytest.mark.parametrize("partitioned", [False, True], ids=["unpartitioned", "identity-category+day-ts"])
def test_other_engines_read_tables_floe_committed(
    sqlite_catalog: CatalogHandle, tmp_path: Path, partitioned: bool, engine: str
) -> None:
    _engine_available(engine)
    cat = sqlite_catalog.catalog
    ident = "ns.events"
    table = make_table(cat, ident, partitioned=partitioned)

    # Floe job 1: three tasks on three "hosts", CSV + JSON lines + Parquet; the first is large enough
    # (1,500 rows per partition) that its unique columns are written without a dictionary
    job1 = [rows(0, 9000), rows(9000, 200), rows(9200, 100)]
    snapshot = begin_distributed_snapshot(table)
    sources = [
        write_csv(tmp_path / "h1" / "a.csv", job1[0]),
        write_jsonl(tmp_path / "h2" / "b.jsonl", job1[1]),
        write_parquet(tmp_path / "h3" / "c.parquet", job1[2]),
    ]
    manifests = [write_task_manifest(snapshot, table, [src], f"t{i}") for i, src in enumerate(sources)]
    assert all(manifests)
    # ... while another writer appends between begin and commit (the commit must rebase onto it)
    appended = rows(10_000, 50)
    other = cat.load_table(ident)
    other.append(pa.Table.from_pylist(appended, schema=other.schema().as_arrow()))
    append_id = other.metadata.current_snapshot().snapshot_id  # type: ignore[union-attr]
    first = commit_distributed_snapshot(table, snapshot, manifests, {"floe.job-id": "job-1"}).snapshot_id  # type: ignore[arg-type]
    table = cat.load_table(ident)
    first_snap = table.metadata.snapshot_by_id(first)
    assert first_snap is not None and first_snap.parent_snapshot_id == append_id
    assert first_snap.sequence_number == 2
    first_metadata = table.metadata_location

    # Floe job 2: 120 one-file tasks, joined into one manifest at commit, then merged with the older
    # ones (min-count-to-merge 2: their entries become EXISTING, keeping their sequence numbers)
    with table.transaction() as tx:
        tx.set_properties(
            {"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "2"}
        )
    table = cat.load_table(ident)
    job2 = [rows(20_000 + 5 * i, 5) for i in range(120)]
    snapshot2 = begin_distributed_snapshot(table)
    small = [
        write_task_manifest(snapshot2, table, [write_csv(tmp_path / "small" / f"s{i}.csv", part)], f"s{i}")
        for i, part in enumerate(job2)
    ]
    assert all(small)
    second = commit_distributed_snapshot(table, snapshot2, small, {"floe.job-id": "job-2"}).snapshot_id  # type: ignore[arg-type]
    table = cat.load_table(ident)
    second_snap = table.metadata.current_snapshot()
    assert second_snap is not None and second_snap.snapshot_id == second
    assert second_snap.parent_snapshot_id == first
    listed = second_snap.manifests(table.io)
    assert len(listed) == 1, [m.manifest_path for m in listed]  # the job's 120 and the older ones, merged

    written_then = [r for part in job1 for r in part] + appended
    written_now = written_then + [r for part in job2 for r in part]
    # the engine reads the table as of Floe's first (rebased) commit and as it is now
    assert _engine(engine, first_metadata, TOTALS, BY_CATEGORY, FILTERED) == _expected(written_then)
    assert _engine(engine, table.metadata_location, TOTALS, BY_CATEGORY, FILTERED) == _expected(written_now)


@ENGINES
def test_other_engines_read_a_manifest_floe_concatenated(
    sqlite_catalog: CatalogHandle, tmp_path: Path, engine: str
) -> None:
    # A fresh table's first job: its task manifests are merged by concatenating their Avro blocks
    # (app/iceberg/manifest_concat.py), a file no pyiceberg writer produced; another engine must read it.
    _engine_available(engine)
    cat = sqlite_catalog.catalog
    table = make_table(
        cat, "ns.concat", partitioned=True,
        properties={"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "20"},
    )
    parts = [rows(7 * i, 7) for i in range(60)]
    snapshot = begin_distributed_snapshot(table)
    manifests = [
        write_task_manifest(snapshot, table, [write_csv(tmp_path / f"c{i}.csv", part)], f"c{i}")
        for i, part in enumerate(parts)
    ]
    commit_distributed_snapshot(table, snapshot, manifests)  # type: ignore[arg-type]
    table = cat.load_table("ns.concat")
    assert len(table.current_snapshot().manifests(table.io)) == 1  # type: ignore[union-attr]
    written = [r for part in parts for r in part]
    assert _engine(engine, table.metadata_location, TOTALS, BY_CATEGORY, FILTERED) == _expected(written)


@ENGINES
def test_other_engines_read_manifests_floe_kept_inline_until_the_commit(
    sqlite_catalog: CatalogHandle, tmp_path: Path, engine: str
) -> None:
    # Task manifests kept in the job store (app/iceberg/inline_manifest.py): the first job's are listed
    # unmerged, so the commit writes each to its path; the second job's are concatenated from memory.
    from tests.support.inline import inline_task

    _engine_available(engine)
    cat = sqlite_catalog.catalog
    table = make_table(cat, "ns.inline", partitioned=True, properties={"commit.manifest-merge.enabled": "false"})
    snapshot = begin_distributed_snapshot(table)
    commit_distributed_snapshot(table, snapshot, [inline_task(snapshot, table, tmp_path / "a", i, 7) for i in range(3)])
    table = cat.load_table("ns.inline")
    first_metadata = table.metadata_location
    assert len(table.current_snapshot().manifests(table.io)) == 3  # type: ignore[union-attr]
    with table.transaction() as tx:
        tx.set_properties({"commit.manifest-merge.enabled": "true"})
    table = cat.load_table("ns.inline")
    snapshot = begin_distributed_snapshot(table)
    second = [inline_task(snapshot, table, tmp_path / "b", i, 7) for i in range(3, 28)]
    commit_distributed_snapshot(table, snapshot, second)
    table = cat.load_table("ns.inline")
    assert len([m for m in table.current_snapshot().manifests(table.io) if m.added_snapshot_id == snapshot.snapshot_id]) == 1  # type: ignore[union-attr]
    assert _engine(engine, first_metadata, TOTALS, BY_CATEGORY, FILTERED) == _expected(rows(0, 21))
    assert _engine(engine, table.metadata_location, TOTALS, BY_CATEGORY, FILTERED) == _expected(rows(0, 28 * 7))
