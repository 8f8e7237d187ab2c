"""workers.sources: every format lands in the exact target schema; every impossible cast is a precise SourceError."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import (
    DateType,
    DecimalType,
    DoubleType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    UUIDType,
)

from app.errors import SourceError
from app.formats import SUPPORTED_SUFFIXES, source_format
from app.iceberg.schema_evolution import SchemaMode
from tests.support.source_files import (
    ALL_NAMES,
    EXPECTED_FULL,
    FULL,
    SMALL,
    SUPPORTED_TEXT,
    TEXT_NAMES,
    TEXT_ROWS,
    U1,
    U2,
    UTC,
    read_all,
    rows_of,
    source_error,
    write_csv,
    write_jsonl,
    write_parquet,
    write_source,
)
from workers.sources import read_source

# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
        ("a.csv", "csv"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.json", "jsonl"),
        ("a.csv.gz", "csv"),
        ("a.jsonl.gz", "jsonl"),
        ("a.ndjson.gz", "jsonl"),
        ("a.json.gz", "jsonl"),
        ("my.daily.export.CSV", "csv"),
    ],
)
def test_source_format_by_suffix(name: str, fmt: str) -> None:
    assert source_format(Path("/data") / name).name == fmt


@pytest.mark.parametrize("name", ["x.txt", "x.parquet.gz", "x.pq.gz", "x.gz", "noext", "x.csv.zip", "x.tsv"])
def test_unsupported_suffix_names_file_and_supported_suffixes(name: str) -> None:
    path = Path("/data") / name
    with pytest.raises(SourceError) as info:
        source_format(path)
    assert str(info.value) == f"{path}: {SUPPORTED_TEXT}"
    with pytest.raises(SourceError, match="unsupported source format"):
        read_source(path, SMALL)  # raised at call time, before any iteration


def test_supported_suffixes_constant() -> None:
    assert set(SUPPORTED_SUFFIXES) == {
        ".parquet",
        ".pq",
        ".csv",
        ".jsonl",
        ".ndjson",
        ".json",
        ".csv.gz",
        ".jsonl.gz",
        ".ndjson.gz",
        ".json.gz",
    }


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("name", TEXT_NAMES)
def test_text_formats_round_trip_every_type(tmp_path: Path, name: str, gz: bool) -> None:
    """Reverse column order and an extra column (schema mode ignore leaves it out); every supported
    type lands exactly."""
    path = write_source(tmp_path / (name + (".gz" if gz else "")), TEXT_ROWS)
    assert rows_of(read_all(path, FULL, mode=SchemaMode.IGNORE)) == EXPECTED_FULL


@pytest.mark.parametrize("name", ["a.parquet", "a.pq"])
def test_parquet_round_trip_casts_every_type(tmp_path: Path, name: str) -> None:
    ns = pa.array([1704164645123456789, 1704164645000000999], pa.timestamp("ns"))
    data: dict[str, pa.Array | list[Any]] = {
        "extra": ["x", "y"],
        "uid": pa.array([U1.bytes, U2.bytes], pa.binary(16)),
        "raw": pa.array([b"xy", b"z"], pa.binary()),
        "tstz": ns.cast(pa.timestamp("ns", tz="Europe/Paris")),
        "ts": ns,  # nanoseconds are truncated to microseconds
        "tm": pa.array([dt.time(3, 4, 5), dt.time(23, 59, 59, 1)], pa.time64("ns")),
        "day": pa.array([dt.date(2024, 1, 2), dt.date(1999, 12, 31)], pa.date32()),
        "price": pa.array([Decimal("12.34"), Decimal("-0.5")], pa.decimal128(6, 2)),
        "n": pa.array([7, -3], pa.int8()),
        "flag": [True, False],
        "amount": pa.array([1.5, -2.25], pa.float32()),
        "name": ["alpha", "beta"],
        "id": pa.array([1, 2], pa.int32()),
    }
    rows = rows_of(read_all(write_parquet(tmp_path / name, data), FULL, mode=SchemaMode.IGNORE))
    ts = [dt.datetime(2024, 1, 2, 3, 4, 5, 123456), dt.datetime(2024, 1, 2, 3, 4, 5)]
    assert [r["ts"] for r in rows] == ts
    assert [r["tstz"] for r in rows] == [t.replace(tzinfo=UTC) for t in ts]
    expected = [{**e, "ts": None, "tstz": None} for e in EXPECTED_FULL]
    assert [{**r, "ts": None, "tstz": None} for r in rows] == expected


@pytest.mark.parametrize("name", ALL_NAMES)
def test_column_order_differs_and_extra_columns_ignored_in_ignore_mode(tmp_path: Path, name: str) -> None:
    path = write_source(tmp_path / name, [{"zzz": 1, "name": "a", "more": "m", "id": 5}])
    batches = read_all(path, SMALL, mode=SchemaMode.IGNORE)
    assert batches[0].schema.names == ["id", "name"]
    assert rows_of(batches) == [{"id": 5, "name": "a"}]


@pytest.mark.parametrize("name", [*ALL_NAMES, "a.csv.gz", "a.jsonl.gz"])
def test_extra_columns_are_refused_in_strict_mode_naming_file_and_columns(tmp_path: Path, name: str) -> None:
    """Strict is the default: a source column the table lacks fails, naming the file and the columns."""
    path = write_source(tmp_path / name, [{"zzz": 1, "name": "a", "more": "m", "id": 5}])
    message = source_error(path, SMALL)
    columns = "'zzz' (long), 'more' (string)" if source_format(path).name == "parquet" else "'zzz', 'more'"
    assert message == (
        f"{path}: the table has no column(s) {columns}; the job's schema mode is strict (start the job with "
        "schema mode evolve to add them to the table, or ignore to leave them out)"
    )


@pytest.mark.parametrize("name", ["a.parquet", "a.jsonl"])
def test_a_new_field_inside_a_struct_is_refused_in_strict_mode(tmp_path: Path, name: str) -> None:
    schema = Schema(*SMALL.fields, NestedField(3, "s", StructType(NestedField(4, "a", LongType()))))
    # the unknown field is on the last line only: JSON lines meets it after reading the others
    data = [{"id": i, "name": "x", "s": {"a": i}} for i in range(50)] + [{"id": 50, "s": {"a": 1, "b": "new"}}]
    path = write_source(tmp_path / name, data)
    assert source_error(path, schema, batch_bytes=512).startswith(f"{path}: the table has no column(s) 's.b'")
    assert rows_of(read_all(path, schema, mode=SchemaMode.IGNORE))[-1] == {"id": 50, "name": None, "s": {"a": 1}}


@pytest.mark.parametrize("name", ALL_NAMES)
def test_missing_optional_column_is_all_null(tmp_path: Path, name: str) -> None:
    schema = Schema(*SMALL.fields, NestedField(3, "note", StringType()), NestedField(4, "when", DateType()))
    path = write_source(tmp_path / name, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    expected = [{"id": i, "name": n, "note": None, "when": None} for i, n in [(1, "a"), (2, "b")]]
    assert rows_of(read_all(path, schema)) == expected


@pytest.mark.parametrize("name", ["a.csv", "a.csv.gz", "a.parquet"])
def test_missing_required_column(tmp_path: Path, name: str) -> None:
    path = write_source(tmp_path / name, [{"name": "a"}])
    assert source_error(path, SMALL) == f"{path}: required column 'id' (long) is missing"


def test_missing_required_key_in_json_is_a_null(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"name": "a"}, {"name": "b"}])
    assert source_error(path, SMALL) == f"{path}: required column 'id' (long) has 2 null or missing value(s)"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_null_in_required_column(tmp_path: Path, name: str) -> None:
    path = write_source(tmp_path / name, [{"id": 1, "name": "a"}, {"id": None, "name": "b"}])
    assert source_error(path, SMALL) == f"{path}: required column 'id' (long) has 1 null or missing value(s)"


# --- impossible casts ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.csv", "a.csv.gz", "a.parquet", "a.jsonl", "a.json.gz"])
def test_string_into_long_names_file_column_and_types(tmp_path: Path, name: str) -> None:
    path = write_source(tmp_path / name, [{"id": "1", "name": "a"}, {"id": "abc", "name": "b"}])
    message = source_error(path, SMALL)
    assert message.startswith(f"{path}: column 'id' cannot be cast from string to long: "), message
    if source_format(path).name != "jsonl":  # pyarrow's JSON reader does not quote the value
        assert "abc" in message


def test_csv_double_error_matches_documented_shape(tmp_path: Path) -> None:
    schema = Schema(NestedField(1, "amount", DoubleType()))
    path = write_csv(tmp_path / "a.csv", [{"amount": "1.5"}, {"amount": "abc"}])
    message = source_error(path, schema)
    # a file within one block is parsed on one thread, whose reader counts rows (the header is row 1)
    assert message == f"{path}: column 'amount' cannot be cast from string to double: " + (
        "Row #3: CSV conversion error to double: invalid value 'abc'"
    )


def test_csv_cast_error_found_mid_stream(tmp_path: Path) -> None:
    rows = [{"id": i, "name": "x" * 50} for i in range(20_000)] + [{"id": "oops", "name": "y"}]
    path = write_csv(tmp_path / "a.csv", rows)
    with pytest.raises(SourceError) as info:
        for _ in read_source(path, SMALL, batch_bytes=64 << 10):
            pass
    assert str(info.value).startswith(f"{path}: column 'id' cannot be cast from string to long: ")
    assert "oops" in str(info.value)


@pytest.mark.parametrize(
    ("value", "field", "source", "target"),
    [
        (2.5, LongType(), "number", "long"),
        (3_000_000_000, IntegerType(), "number", "int"),
        ("not-a-date", DateType(), "string", "date"),
        ("2024-13-01T00:00:00", TimestampType(), "string", "timestamp"),
        ("12.345", DecimalType(10, 2), "string", "decimal(10, 2)"),
        (True, LongType(), "boolean", "long"),
        ("nope", UUIDType(), "string", "uuid"),
    ],
)
def test_json_cast_errors_name_column_and_types(
    tmp_path: Path, value: object, field: Any, source: str, target: str
) -> None:
    schema = Schema(NestedField(1, "id", LongType()), NestedField(2, "v", field))
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": 1, "v": None}, {"id": 2, "v": value}])
    message = source_error(path, schema)
    assert message.startswith(f"{path}: column 'v' cannot be cast from {source} to {target}: "), message


def test_parquet_lossy_cast_is_an_error(tmp_path: Path) -> None:
    schema = Schema(NestedField(1, "n", IntegerType()))
    path = write_parquet(tmp_path / "a.parquet", {"n": pa.array([1, 1 << 40], pa.int64())})
    assert source_error(path, schema).startswith(f"{path}: column 'n' cannot be cast from long to int: ")


def test_csv_timestamptz_without_offset_is_an_error(tmp_path: Path) -> None:
    schema = Schema(NestedField(1, "t", TimestamptzType()))
    path = write_csv(tmp_path / "a.csv", [{"t": "2024-01-02T03:04:05"}])
    message = source_error(path, schema)
    assert message.startswith(f"{path}: column 't' cannot be cast from string to timestamptz: ")


