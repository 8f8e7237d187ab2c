"""A planned job on the real stack (issue 15): `floe job start --source HOST:GLOB` style, each host's
real Celery worker plans its own files, splits a big CSV with quoted newlines, packs small files, and
the table reads back in iceberg-rust and DuckDB with every row once."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from app.proto_gen.api import common_pb2
from tests.support.system import Cluster
from tests.support.tables import make_table, read_ids, rows, write_csv, write_jsonl, write_parquet
from tests.test_outside_checks import TOTALS, _engine, _engine_available

pytestmark = pytest.mark.integration


def _write_quoted_csv(path: Path, start: int, count: int) -> list[dict[str, object]]:
    """A CSV whose names hold quoted newlines, quotes and commas (RFC 4180), several MB."""
    written = rows(start, count)
    for r in written:
        r["name"] = f'line one of {r["id"]}\nline "two", with a comma'
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(written[0]), lineterminator="\r\n")
    writer.writeheader()
    for r in written:
        writer.writerow({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), newline="")
    return written


def test_hosts_plan_split_and_pack_and_outside_engines_read_it(topology_cluster: Cluster) -> None:
    cluster = topology_cluster  # SQLite + file://, and SeaweedFS's REST catalog + S3
    cluster.env["FLOE_PLAN_MIN_TASK_BYTES"] = str(1 << 20)
    try:
        make_table(cluster.catalog, "demo.events", partitioned=True)
        big = _write_quoted_csv(cluster.data_dir("1") / "big" / "export.csv", 0, 40_000)
        for i in range(30):
            write_csv(cluster.data_dir("2") / "small" / f"s{i:02d}.csv", rows(100_000 + i * 5, 5))
        write_jsonl(cluster.data_dir("2") / "small" / "more.jsonl", rows(100_150, 50))
        write_parquet(cluster.data_dir("2") / "p.parquet", rows(100_200, 100))
        cluster.start_coordinator()
        cluster.start_worker("1", concurrency=2)
        cluster.start_worker("2", concurrency=2)
        with cluster.client() as client:
            reply = client.start_job(
                "demo", "events", requester="test", sources=[("1", ["big/*.csv"]), ("2", ["small", "*.parquet"])]
            )
        status = cluster.wait_for_state(reply.job_id, timeout=120)
        assert status.state == common_pb2.COMPLETED, (status, cluster.logs()[-4000:])
        hosts = {h.host: h for h in status.hosts}
        assert hosts["1"].tasks_total == 2 and hosts["1"].planned_files == 1  # the big file, split in two
        assert hosts["2"].tasks_total == 1 and hosts["2"].planned_files == 32  # small files packed
        assert hosts["1"].concurrency == 2 and not status.planning
        table = cluster.catalog.load_table("demo.events")
        expected_ids = list(range(40_000)) + list(range(100_000, 100_300))
        assert read_ids(table) == expected_ids
        names = table.scan(row_filter="id < 3", selected_fields=("id", "name")).to_arrow().sort_by("id")
        assert names.column("name").to_pylist() == [r["name"] for r in big[:3]]  # quoted newlines kept
        # at most hosts x processes x partitions data files (2 x 2 x 6 here)
        assert status.files_written <= 2 * 2 * 6
        metadata = table.metadata_location
        if not metadata.startswith("file:"):
            return  # the outside engines read the file:// warehouse here (they get no S3 credentials)
        for engine in ("iceberg-rust", "duckdb"):
            _engine_available(engine)
            (totals,) = _engine(engine, metadata, TOTALS)
            assert totals == [
                {
                    "n": len(expected_ids),
                    "ids": len(expected_ids),
                    "id_sum": sum(expected_ids),
                    "amount_sum": sum(r["amount"] for r in big) + sum(r["amount"] for r in rows(100_000, 300)),  # type: ignore[misc]
                }
            ], engine
    finally:
        cluster.stop_all()
