"""workers.file_statistics gives, for every file, exactly the statistics pyiceberg's two steps give."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    schema_to_pyarrow,
)
from pyiceberg.schema import Schema
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FixedType,
    FloatType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    UUIDType,
)

from workers.file_statistics import column_rules, serialized_statistics

SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "name", StringType(), required=False),
    NestedField(3, "blob", BinaryType(), required=False),
    NestedField(4, "small", DecimalType(9, 2), required=False),
    NestedField(5, "mid", DecimalType(18, 4), required=False),
    NestedField(6, "big", DecimalType(30, 3), required=False),
    NestedField(7, "ok", BooleanType(), required=False),
    NestedField(8, "day", DateType(), required=False),
    NestedField(9, "ts", TimestampType(), required=False),
    NestedField(10, "tstz", TimestamptzType(), required=False),
    NestedField(11, "ratio", FloatType(), required=False),
    NestedField(12, "amount", DoubleType(), required=False),
    NestedField(13, "qty", IntegerType(), required=False),
    NestedField(14, "fixed", FixedType(4), required=False),
    NestedField(15, "u", UUIDType(), required=False),
    NestedField(
        16,
        "point",
        StructType(
            NestedField(17, "x", LongType(), required=False),
            NestedField(18, "label", StringType(), required=False),
        ),
        required=False,
    ),
    NestedField(19, "tags", ListType(20, StringType(), element_required=False), required=False),
    NestedField(21, "attrs", MapType(22, StringType(), 23, LongType(), value_required=False), required=False),
)
MAX_CHAR = "\U0010ffff"


def _row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": ["a", "zebra-" * 5 + str(i), "é" * 20, MAX_CHAR * 18, "mid"][i % 5],
        "blob": [b"\x00", b"\xff" * 20, b"x" * 17 + bytes([i % 256])][i % 3],
        "small": decimal.Decimal(i * 7 - 300) / 100,
        "mid": decimal.Decimal(i * 12345 - 9_000_000) / 10_000,
        "big": decimal.Decimal(10**25 + i * 1001) / 1000,
        "ok": i % 3 == 0,
        "day": dt.date(2026, 1, 1) + dt.timedelta(days=i),
        "ts": dt.datetime(2026, 1, 1) + dt.timedelta(seconds=i * 977),
        "tstz": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=i),
        "ratio": float(i) / 3 if i % 7 else float("nan"),
        "amount": -i * 1.25,
        "qty": i - 50,
        "fixed": bytes([i % 256]) * 4,
        "u": uuid.UUID(int=i * 0x1234567).bytes,
        "point": {"x": i, "label": f"p{i}"},
        "tags": [f"t{i}", "z" * 30],
        "attrs": [("k", i)],
    }


def _table(rows: list[dict[str, Any]], nulls_every: int = 0) -> pa.Table:
    if nulls_every:
        rows = [dict.fromkeys(r) if i % nulls_every == 0 else r for i, r in enumerate(rows)]
    return pa.Table.from_pylist(rows, schema=schema_to_pyarrow(SCHEMA))


def _metadata(table: pa.Table, **kwargs: Any) -> pq.FileMetaData:
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, table.schema, **kwargs) as writer:
        writer.write_table(table, row_group_size=40)
    return pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata


def _both(
    metadata: pq.FileMetaData, properties: dict[str, str], schema: Schema = SCHEMA
) -> tuple[dict[str, Any], dict[str, Any]]:
    plan = compute_statistics_plan(schema, properties)
    ids = parquet_path_to_id_mapping(schema)
    theirs = data_file_statistics_from_parquet_metadata(metadata, plan, ids).to_serialized_dict()
    ours = serialized_statistics(metadata, column_rules(plan), ids)
    return theirs, ours


PROPERTY_SETS = [
    {},
    {"write.metadata.metrics.default": "full"},
    {"write.metadata.metrics.default": "counts"},
    {"write.metadata.metrics.default": "none"},
    {"write.metadata.metrics.default": "truncate(3)"},
    {
        "write.metadata.metrics.default": "truncate(1)",
        "write.metadata.metrics.column.id": "none",
        "write.metadata.metrics.column.name": "full",
        "write.metadata.metrics.column.blob": "counts",
    },
]


@pytest.mark.parametrize(
    "properties",
    PROPERTY_SETS,
    ids=lambda p: ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in p.items()) or "defaults",
)
@pytest.mark.parametrize("nulls_every", [0, 4, 1])
def test_same_statistics_as_pyiceberg(properties: dict[str, str], nulls_every: int) -> None:
    # 130 rows in row groups of 40: four row groups folded; the string maxima need truncation,
    # one of them can not be raised (the highest code point) and has no upper bound
    metadata = _metadata(_table([_row(i) for i in range(130)], nulls_every))
    assert metadata.num_row_groups == 4
    theirs, ours = _both(metadata, properties)
    assert ours == theirs
    # the dictionaries' order is the Avro map order in the manifest: the same too
    assert {k: list(v) if isinstance(v, dict) else v for k, v in ours.items()} == {
        k: list(v) if isinstance(v, dict) else v for k, v in theirs.items()
    }


def test_bounds_are_really_there() -> None:
    """Not two empty results agreeing: the defaults give truncated string bounds and full numeric ones."""
    theirs, ours = _both(_metadata(_table([_row(i) for i in range(130)])), {})
    assert ours["record_count"] == 130
    assert ours["lower_bounds"][2] == b"a"
    assert ours["lower_bounds"][3] == b"\x00"
    # both maxima are 16+ of the highest character / byte: truncated, they can not be raised
    assert 2 not in ours["upper_bounds"] and 3 not in ours["upper_bounds"]
    assert 1 in ours["upper_bounds"] and 6 in ours["lower_bounds"]
    assert 20 not in ours["lower_bounds"] and ours["value_counts"][20] == 260  # nested: counts only
    assert len(ours["split_offsets"]) == 4
    assert ours == theirs


def test_wrong_physical_type_is_refused_like_pyiceberg() -> None:
    """A Parquet column whose physical type does not fit the field: the same error, naming the column."""
    schema = Schema(NestedField(1, "n", IntegerType(), required=False))
    data = pa.table({"n": pa.array([1.5, 2.5], pa.float64())})
    data = data.cast(pa.schema([pa.field("n", pa.float64(), metadata={b"PARQUET:field_id": b"1"})]))
    metadata = _metadata(data)
    plan = compute_statistics_plan(schema, {})
    ids = parquet_path_to_id_mapping(schema)
    with pytest.raises(ValueError) as theirs:
        data_file_statistics_from_parquet_metadata(metadata, plan, ids)
    with pytest.raises(ValueError) as ours:
        serialized_statistics(metadata, column_rules(plan), ids)
    assert str(ours.value) == str(theirs.value)
    assert "for column 'n'" in str(ours.value)


def test_missing_statistics_drop_bounds_like_pyiceberg() -> None:
    table = _table([_row(i) for i in range(50)])
    theirs, ours = _both(_metadata(table, write_statistics=["id", "name"]), {})
    assert ours == theirs
    assert set(ours["lower_bounds"]) == {1, 2}


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.one_of(st.none(), st.text(max_size=24)), min_size=1, max_size=60),
    blobs=st.lists(st.one_of(st.none(), st.binary(max_size=24)), min_size=1, max_size=60),
    mode=st.sampled_from(["truncate(16)", "truncate(1)", "truncate(5)", "full", "counts"]),
)
def test_any_strings_and_bytes(names: list[str | None], blobs: list[bytes | None], mode: str) -> None:
    n = min(len(names), len(blobs))
    schema = Schema(
        NestedField(1, "s", StringType(), required=False), NestedField(2, "b", BinaryType(), required=False)
    )
    table = pa.table({"s": names[:n], "b": blobs[:n]}, schema=schema_to_pyarrow(schema))
    theirs, ours = _both(_metadata(table), {"write.metadata.metrics.default": mode}, schema)
    assert ours == theirs
