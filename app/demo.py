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
    from app.settings import get_settings, reset_settings

    home = get_settings().demo_home
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    os.environ["FLOE_HOME"] = str(home)
    for key in ("ICEBERG_CATALOG_NAME", "ICEBERG_CATALOG_TYPE", "ICEBERG_CATALOG_URI", "ICEBERG_WAREHOUSE"):
        os.environ.pop(key, None)
    reset_settings()
    import logging

    from app.catalog import get_catalog
    from app.client import CoordinatorClient, TaskArg
    from app.client_cli import watch
    from app.stack import LocalStack, free_port, free_port_block
    from app.tables import create_table

    logging.getLogger().setLevel(logging.WARNING)
    print(f"floe demo: working in {home}")
    # The demo is self-contained: free ports, so it runs beside anything else on the machine.
    with LocalStack(
        hosts=2, coordinator_port=free_port(), worker_base_port=free_port_block(2), flower_port=free_port()
    ) as stack:
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
        print(format_rows(rows))
        print("\n" + flower_report(stack.flower_url, stack.flower_auth or "", reply.job_id))
        return 0 if count == total else 1


def flower_report(url: str, auth: str, job_id: str) -> str:
    """What Flower's API shows for this job's tasks (it is the dashboard users would open)."""
    import base64
    import json
    import urllib.request

    request = urllib.request.Request(f"{url}/api/tasks?limit=100")
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    deadline = time.monotonic() + 15
    mine: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                tasks = json.load(response)
        except OSError:
            tasks = {}
        mine = [t for t in tasks.values() if job_id in str(t.get("args", ""))]
        if len(mine) >= 4 and all(t.get("state") == "SUCCESS" for t in mine):
            break
        time.sleep(0.5)
    lines = [f"Flower ({url}) lists {len(mine)} tasks of this job:"]
    for t in sorted(mine, key=lambda t: str(t.get("args"))):
        lines.append(
            f"  {t.get('name')} {t.get('args')} {t.get('state')} on {t.get('worker')} in {t.get('runtime')}s"
        )
    return "\n".join(lines)


def format_rows(table: pa.Table) -> str:
    header = table.column_names
    cells = [[str(v) for v in row.values()] for row in table.to_pylist()]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
