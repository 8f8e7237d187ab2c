"""Schema drift on the real stack (issue 17): `floe job start --schema-mode evolve` over two hosts' real
Celery workers, on SQLite + file:// and on SeaweedFS's REST catalog + S3. Both hosts meet the same new
column (one field id, agreed through Redis), each brings one of its own, a struct gains a field and a
column widens; the schema lands with the job's snapshot, old rows read null (pyiceberg, iceberg-rust,
DuckDB). Then a job in the default mode, strict, refuses a file with a column the table lacks."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.drift import OLD_ROW, WIDE
from tests.support.system import Cluster
from tests.test_cli import cluster_env, floe
from tests.test_outside_checks import _engine, _engine_available

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_two_hosts_evolve_the_table_in_one_commit_and_strict_refuses(
    topology_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = topology_cluster
    table = cluster.catalog.create_table("demo.events", schema=WIDE)
    table.append(pa.Table.from_pylist([OLD_ROW], schema=table.schema().as_arrow()))
    last_column_id = cluster.catalog.load_table("demo.events").metadata.last_column_id
    pq.write_table(pa.table({
        "id": pa.array([10, 11], pa.int64()),
        "n": pa.array([2**40, 1], pa.int64()),
        "s": pa.array([{"a": "x", "b": 1}, None], pa.struct([("a", pa.string()), ("b", pa.int64())])),
        "score": pa.array([1, 2], pa.int64()),
        "origin": ["parquet", "parquet"],
    }), cluster.data_dir("1") / "a.parquet")  # fmt: skip
    (cluster.data_dir("2") / "b.jsonl").write_text(
        '{"id": 20, "score": 3, "label": "twenty"}\n{"id": 21, "s": {"a": "y", "b": 4}, "label": "x"}\n'
    )
    cluster.start_coordinator()
    cluster.start_worker("1")
    cluster.start_worker("2")
    env = cluster_env(cluster)
    result = floe(
        "job", "start", "demo.events", "--task", "h1:1:*.parquet", "--task", "h2:2:*.jsonl",
        "--schema-mode", "evolve", "--watch", env=env, cwd=tmp_path, timeout=150,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout, result.stderr, cluster.logs())
    reply = json.loads(result.stdout)
    assert reply["status"]["schema_mode"] == "SCHEMA_MODE_EVOLVE"

    table = cluster.catalog.load_table("demo.events")
    schema = table.schema()
    assert len(table.metadata.schemas) == 2 and table.current_snapshot().schema_id == schema.schema_id  # type: ignore[union-attr]
    new = {name: schema.find_field(name).field_id for name in ("score", "origin", "label", "s.b")}
    assert min(new.values()) > last_column_id + 1000 and len(set(new.values())) == 4
    assert str(schema.find_field("n").field_type) == "long"
    rows = sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["id"])
    assert [(r["id"], r["n"], r["s"], r["score"], r["origin"], r["label"]) for r in rows] == [
        (0, 7, {"a": "old", "b": None}, None, None, None),
        (10, 2**40, {"a": "x", "b": 1}, 1, "parquet", None),
        (11, 1, None, 2, "parquet", None),
        (20, None, None, 3, None, "twenty"),
        (21, None, {"a": "y", "b": 4}, None, None, "x"),
    ]
    assert [r["dec"] for r in rows][0] == Decimal("1.25")

    metadata = table.metadata_location
    if metadata.startswith("file:"):  # the outside engines read the file:// warehouse (no S3 credentials)
        for engine in ("iceberg-rust", "duckdb"):
            _engine_available(engine)
            (got,) = _engine(engine, metadata, "SELECT id, n, score, label FROM t ORDER BY id")
            assert got == [
                {"id": r["id"], "n": r["n"], "score": r["score"], "label": r["label"]} for r in rows
            ], engine

    # strict, the default: a file with a column the table lacks fails the job; nothing is committed
    (cluster.data_dir("2") / "c.csv").write_text("id,surprise\n30,1\n")
    snapshots = len(table.metadata.snapshots)
    strict = floe(
        "job", "start", "demo.events", "--task", "h3:2:*.csv", "--watch", env=env, cwd=tmp_path, timeout=150
    )
    assert strict.returncode == 1, (strict.stdout, strict.stderr, cluster.logs())
    job_id = json.loads(strict.stdout)["job_id"]
    status = floe("job", "status", job_id, env=env, cwd=tmp_path)
    shown = json.loads(status.stdout)
    assert shown["state"] == "FAILED" and shown["schema_mode"] == "SCHEMA_MODE_STRICT"
    assert (
        "c.csv: the table has no column(s) 'surprise'; the job's schema mode is strict"
        in shown["failure_reason"]
    )
    assert len(cluster.catalog.load_table("demo.events").metadata.snapshots) == snapshots
