"""Table and source-file builders shared by the tests."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType

SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "name", StringType(), required=False),
    NestedField(3, "category", StringType(), required=False),
    NestedField(4, "ts", TimestampType(), required=False),
    NestedField(5, "amount", DoubleType(), required=False),
)
PARTITIONED = PartitionSpec(
    PartitionField(source_id=3, field_id=1000, transform=IdentityTransform(), name="category"),
    PartitionField(source_id=4, field_id=1001, transform=DayTransform(), name="ts_day"),
)
CATEGORIES = ("a", "b", "c")
BASE_TS = dt.datetime(2024, 1, 1)


def make_table(
    catalog: Catalog, identifier: str, partitioned: bool = False, properties: dict[str, str] | None = None
) -> Table:
    return catalog.create_table(
        identifier,
        schema=SCHEMA,
        partition_spec=PARTITIONED if partitioned else PartitionSpec(),
        properties=properties or {},
    )


def rows(start: int, count: int, days: int = 2) -> list[dict[str, object]]:
    return [
        {
            "id": i,
            "name": f"name-{i}" * (1 + i % 3),
            "category": CATEGORIES[i % len(CATEGORIES)],
            "ts": BASE_TS + dt.timedelta(days=i % days, seconds=i),
            "amount": i * 1.5,
        }
        for i in range(start, start + count)
    ]


def write_csv(path: Path, data: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(data[0]))
        writer.writeheader()
        for row in data:
            writer.writerow({k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()})
    return path


def write_jsonl(path: Path, data: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in data:
            f.write(
                json.dumps({k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()})
            )
            f.write("\n")
    return path


def write_parquet(path: Path, data: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(data), path)
    return path


def local(path: str) -> Path:
    """A file:// location as a local path."""
    return Path(path.removeprefix("file://"))


def read_ids(table: Table) -> list[int]:
    return sorted(table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist())


def write_big_csv(path: Path, count: int) -> Path:
    """A large CSV in the table's schema, written by pyarrow (fast); ids 0..count-1."""
    import pyarrow.csv as pacsv

    path.parent.mkdir(parents=True, exist_ok=True)
    block = 250_000
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("category", pa.string()),
                        ("ts", pa.timestamp("us")), ("amount", pa.float64())])
    with pacsv.CSVWriter(path, schema) as writer:
        for start in range(0, count, block):
            n = min(block, count - start)
            ids = pa.array(range(start, start + n), pa.int64())
            writer.write_table(pa.table({
                "id": ids,
                "name": pa.array([f"name-{i}" for i in range(start, start + n)]),
                "category": pa.array([CATEGORIES[i % 3] for i in range(start, start + n)]),
                "ts": pa.array([1_704_067_200_000_000 + i * 1_000_000 for i in range(start, start + n)], pa.timestamp("us")),
                "amount": pa.array([i * 1.5 for i in range(start, start + n)]),
            }, schema=schema))
    return path
