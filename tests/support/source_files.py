"""Source files for the tests of workers.sources: the schemas, the rows every format carries, and the
writers and readers the tests share (tests/test_sources.py, tests/test_source_failures.py)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

from app.errors import SourceError
from app.formats import source_format
from app.iceberg.schema_evolution import SchemaMode
from workers.sources import read_source

UTC = dt.timezone.utc
U1 = uuid.UUID("12345678-1234-5678-1234-567812345678")
U2 = uuid.UUID("87654321-4321-8765-4321-876543218765")
SUPPORTED_TEXT = (
    "unsupported source format (supported: .parquet, .pq, .csv, .jsonl, .ndjson, .json, "
    "and .csv.gz/.jsonl.gz/.ndjson.gz/.json.gz)"
)

FULL = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "name", StringType()),
    NestedField(3, "amount", DoubleType()),
    NestedField(4, "flag", BooleanType()),
    NestedField(5, "n", IntegerType()),
    NestedField(6, "price", DecimalType(10, 2)),
    NestedField(7, "day", DateType()),
    NestedField(8, "tm", TimeType()),
    NestedField(9, "ts", TimestampType()),
    NestedField(10, "tstz", TimestamptzType()),
    NestedField(11, "raw", BinaryType()),
    NestedField(12, "uid", UUIDType()),
)
SMALL = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "name", StringType()),
)

# Text-format rows (CSV/JSON): columns deliberately in reverse schema order plus an extra column.
TEXT_ROWS: list[dict[str, Any]] = [
    {
        "extra": "ignored",
        "uid": str(U1),
        "raw": "xy",
        "tstz": "2024-01-02T03:04:05Z",
        "ts": "2024-01-02T03:04:05",
        "tm": "03:04:05",
        "day": "2024-01-02",
        "price": "12.34",
        "n": 7,
        "flag": True,
        "amount": 1.5,
        "name": "alpha",
        "id": 1,
    },
    {
        "extra": "ignored",
        "uid": str(U2),
        "raw": "z",
        "tstz": "2024-01-02 05:04:05.5+02:00",
        "ts": "2024-01-02 03:04:05.123456",
        "tm": "23:59:59.000001",
        "day": "1999-12-31",
        "price": "-0.5",
        "n": -3,
        "flag": False,
        "amount": -2.25,
        "name": "beta",
        "id": 2,
    },
]
EXPECTED_FULL = [
    {
        "id": 1,
        "name": "alpha",
        "amount": 1.5,
        "flag": True,
        "n": 7,
        "price": Decimal("12.34"),
        "day": dt.date(2024, 1, 2),
        "tm": dt.time(3, 4, 5),
        "ts": dt.datetime(2024, 1, 2, 3, 4, 5),
        "tstz": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "raw": b"xy",
        "uid": U1,
    },
    {
        "id": 2,
        "name": "beta",
        "amount": -2.25,
        "flag": False,
        "n": -3,
        "price": Decimal("-0.50"),
        "day": dt.date(1999, 12, 31),
        "tm": dt.time(23, 59, 59, 1),
        "ts": dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
        "tstz": dt.datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC),
        "raw": b"z",
        "uid": U2,
    },
]


def open_text(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "wt", encoding="utf-8")
    return path.open("w", encoding="utf-8")


def cell_text(value: object) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    """A CSV with a header; None and missing keys become empty cells, booleans true/false."""
    columns = columns or list(rows[0])
    with open_text(path) as f:
        f.write(",".join(columns) + "\n")
        for row in rows:
            f.write(",".join(cell_text(row.get(c)) for c in columns) + "\n")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open_text(path) as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def write_parquet(path: Path, data: dict[str, pa.Array | list[Any]]) -> Path:
    pq.write_table(pa.table(data), path)
    return path


def write_source(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` in the format ``path``'s suffix names (parquet columns inferred by pyarrow)."""
    if source_format(path).name == "csv":
        return write_csv(path, rows)
    if source_format(path).name == "jsonl":
        return write_jsonl(path, rows)
    return write_parquet(path, {k: [r.get(k) for r in rows] for k in rows[0]})


def read_all(
    path: Path, schema: Schema, batch_bytes: int = 16 << 20, mode: SchemaMode = SchemaMode.STRICT
) -> list[pa.RecordBatch]:
    batches = list(read_source(path, schema, batch_bytes, mode=mode))
    target = schema_to_pyarrow(schema)
    for batch in batches:
        assert batch.schema.equals(target, check_metadata=True), batch.schema
        assert batch.num_rows > 0
    return batches


def rows_of(batches: list[pa.RecordBatch]) -> list[dict[str, Any]]:
    return [row for b in batches for row in b.to_pylist()]


def source_error(
    path: Path, schema: Schema, batch_bytes: int = 16 << 20, mode: SchemaMode = SchemaMode.STRICT
) -> str:
    with pytest.raises(SourceError) as info:
        list(read_source(path, schema, batch_bytes, mode=mode))
    return str(info.value)


TEXT_NAMES = ["a.csv", "a.jsonl", "a.ndjson", "a.json"]
ALL_NAMES = [*TEXT_NAMES, "a.parquet", "a.pq"]
