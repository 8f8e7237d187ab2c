"""`floe demo` (behind `make demo`): the local stack, sample files on two hosts, one job, the result.

Runs on embedded defaults (private Redis, SQLite catalog, file:// warehouse under FLOE_HOME, default
``.floe/demo``), then stops everything it started.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import random
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

CATEGORIES = ("books", "games", "music", "tools")
ROWS_PER_FILE = 25_000


def _sample(start: int, count: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    base = dt.datetime(2026, 11, 20)
    return pa.table(
        {
            "id": pa.array(range(start, start + count), pa.int64()),
            "user": [f"user-{rng.randrange(5000):05d}" for _ in range(count)],
            "category": [rng.choice(CATEGORIES) for _ in range(count)],
            "ts": pa.array(
                [base + dt.timedelta(seconds=rng.randrange(3 * 86400)) for _ in range(count)],
                pa.timestamp("us"),
            ),
            "amount": [round(rng.uniform(1, 500), 2) for _ in range(count)],
        }
    )


def write_samples(host1: Path, host2: Path) -> int:
    """CSV and JSON-lines on host 1, Parquet and gzip CSV on host 2. Returns the row count."""
    host1.mkdir(parents=True, exist_ok=True)
    host2.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(_sample(0, ROWS_PER_FILE, 1), host1 / "orders-1.csv")
    with (host1 / "orders-2.jsonl").open("w") as f:
        for row in _sample(ROWS_PER_FILE, ROWS_PER_FILE, 2).to_pylist():
            row["ts"] = row["ts"].isoformat()
            f.write(__import__("json").dumps(row) + "\n")
    pq.write_table(_sample(2 * ROWS_PER_FILE, ROWS_PER_FILE, 3), host2 / "orders-3.parquet")
    buffer = pa.BufferOutputStream()
    pacsv.write_csv(_sample(3 * ROWS_PER_FILE, ROWS_PER_FILE, 4), buffer)
    (host2 / "orders-4.csv.gz").write_bytes(gzip.compress(buffer.getvalue().to_pybytes()))
    return 4 * ROWS_PER_FILE


def run_demo() -> int:
    home = Path(os.environ.get("FLOE_HOME") or ".floe/demo").absolute()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    os.environ["FLOE_HOME"] = str(home)
    for key in ("ICEBERG_CATALOG_NAME", "ICEBERG_CATALOG_TYPE", "ICEBERG_CATALOG_URI", "ICEBERG_WAREHOUSE"):
        os.environ.pop(key, None)
    from app.settings import reset_settings

    reset_settings()
    from app.catalog import get_catalog
    from app.client import CoordinatorClient, TaskArg
    from app.client_cli import watch
    from app.settings import get_settings
    from app.stack import LocalStack
    from app.tables import create_table

    print(f"floe demo: working in {home}")
    with LocalStack(hosts=2) as stack:
        stack.wait_healthy(timeout=120)
        (id1, dir1, _), (id2, dir2, _) = stack.hosts[0], stack.hosts[1]
        total = write_samples(Path(dir1), Path(dir2))
        print(
            f"wrote {total:,} sample rows: CSV + JSON-lines on host {id1}, Parquet + gzip CSV on host {id2}"
        )
        catalog = get_catalog(get_settings())
        table = create_table(
            catalog,
            "demo.orders",
            sample=str(Path(dir2) / "orders-3.parquet"),
            partition_by="category,day(ts)",
        )
        print(f"created table demo.orders partitioned by {table.spec()}")
        started = time.monotonic()
        with CoordinatorClient(stack.coordinator_target) as client:
            reply = client.start_job(
                "demo",
                "orders",
                requester="floe-demo",
                tasks=[
                    TaskArg("csv", id1, ["*.csv"]),
                    TaskArg("jsonl", id1, ["*.jsonl"]),
                    TaskArg("parquet", id2, ["*.parquet"]),
                    TaskArg("csv-gz", id2, ["*.csv.gz"]),
                ],
            )
            print(f"job {reply.job_id} reserved snapshot {reply.snapshot.snapshot_id}; 4 tasks on 2 hosts")
            final = watch(client, reply.job_id)
        elapsed = time.monotonic() - started
        if final.state != 4:  # COMPLETED
            print(f"job ended {final.state}: {final.failure_reason}")
            return 1
        table = catalog.load_table("demo.orders")
        snap = table.metadata.current_snapshot()
        assert snap is not None
        print(f"\njob completed in {elapsed:.1f}s: snapshot {snap.snapshot_id}")
        print("summary:")
        for key, value in (snap.summary.additional_properties if snap.summary else {}).items():
            print(f"  {key} = {value}")
        rows = table.scan(limit=5).to_arrow()
        count = table.scan(selected_fields=("id",)).to_arrow().num_rows
        print(
            f"\n{count:,} rows in the table ({'every row once' if count == total else 'MISMATCH'}); a few of them:"
        )
        print(rows.to_pandas().to_string(index=False) if _has_pandas() else rows.to_pylist())
        return 0 if count == total else 1


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True
