"""workers.sources: every format lands in the exact target schema; every failure is a precise SourceError."""

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
    StructType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

from app.errors import SourceError
from app.formats import SUPPORTED_SUFFIXES, source_format
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


def _open_text(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "wt", encoding="utf-8")
    return path.open("w", encoding="utf-8")


def _cell(value: object) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    """A CSV with a header; None and missing keys become empty cells, booleans true/false."""
    columns = columns or list(rows[0])
    with _open_text(path) as f:
        f.write(",".join(columns) + "\n")
        for row in rows:
            f.write(",".join(_cell(row.get(c)) for c in columns) + "\n")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with _open_text(path) as f:
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


# --- unreadable files ----------------------------------------------------------------------------


def test_missing_file_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(SourceError) as info:
        read_source(missing, SMALL)
    assert str(info.value) == f"{missing}: cannot be read: no such file"
    folder = tmp_path / "dir.parquet"
    folder.mkdir()
    with pytest.raises(SourceError) as info:
        read_source(folder, SMALL)
    assert str(info.value) == f"{folder}: cannot be read: is a directory"


def test_truncated_parquet(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "a.parquet", {"id": list(range(10_000)), "name": ["n"] * 10_000})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert source_error(path, SMALL).startswith(f"{path}: cannot be read: ")


def test_parquet_corrupt_data_pages_fail_mid_stream(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    table = pa.table({"id": list(range(200_000)), "name": [f"name-{i}" for i in range(200_000)]})
    pq.write_table(table, path, row_group_size=20_000, compression="snappy")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xff" * 4096  # footer intact, data pages garbage
    path.write_bytes(bytes(data))
    assert source_error(path, SMALL).startswith(f"{path}: cannot be read: ")


def test_not_parquet_at_all(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    path.write_text("id,name\n1,a\n")
    assert source_error(path, SMALL).startswith(f"{path}: cannot be read: ")


def test_gzip_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "a.csv.gz"
    path.write_bytes(b"id,name\n1,a\n")
    assert source_error(path, SMALL).startswith(f"{path}: cannot be read: ")


@pytest.mark.parametrize("name", ["a.csv.gz", "a.jsonl.gz"])
def test_gzip_corrupt_mid_stream(tmp_path: Path, name: str) -> None:
    rows = [{"id": i, "name": f"row {i} " + "x" * (i % 97)} for i in range(50_000)]
    path = write_source(tmp_path / name, rows)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 256] = bytes(256)
    path.write_bytes(bytes(data))
    assert source_error(path, SMALL, batch_bytes=64 << 10).startswith(f"{path}: cannot be read: ")


@pytest.mark.parametrize("name", ["a.csv.gz", "a.ndjson.gz"])
def test_gzip_truncated(tmp_path: Path, name: str) -> None:
    path = write_source(tmp_path / name, [{"id": i, "name": f"n{i}"} for i in range(20_000)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    assert source_error(path, SMALL, batch_bytes=64 << 10).startswith(f"{path}: cannot be read: ")


def test_malformed_json_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": 1, "name": "a"}\n{"id": 2, "name": \n')
    assert source_error(path, SMALL).startswith(f"{path}: cannot be read: ")


def test_csv_row_with_wrong_column_count(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("id,name\n1,a\n2,b,c,d\n")
    assert source_error(path, SMALL).startswith(f"{path}: cannot be read: ")


# --- empty files and streaming -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [("a.csv", b"id,name\n"), ("b.csv", b""), ("a.jsonl", b""), ("b.jsonl", b"\n\n")],
)
def test_empty_text_sources_yield_nothing(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert list(read_source(path, SMALL)) == []


def test_empty_gzip_and_parquet_yield_nothing(tmp_path: Path) -> None:
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress(b"id,name\n"))
    empty = pa.table({"id": pa.array([], pa.int64()), "name": pa.array([], pa.string())})
    pq.write_table(empty, tmp_path / "a.parquet")
    assert list(read_source(gz, SMALL)) == []
    assert list(read_source(tmp_path / "a.parquet", SMALL)) == []


def _big_csv(path: Path, target_bytes: int) -> int:
    line = "{i},{i}-name-padding-padding-padding-padding,{f},2024-01-02T03:04:05\n"
    count = 0
    with _open_text(path) as f:
        f.write("id,name,amount,ts\n")
        written = 0
        while written < target_bytes:
            chunk = "".join(line.format(i=i, f=i / 4) for i in range(count, count + 10_000))
            f.write(chunk)
            written += len(chunk)
            count += 10_000
    return count


@pytest.mark.parametrize("name", ["big.csv", "big.csv.gz"])
def test_large_csv_streams_in_bounded_batches(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    rows = _big_csv(path, 30 << 20)
    schema = Schema(
        NestedField(1, "id", LongType(), required=True),
        NestedField(2, "name", StringType()),
        NestedField(3, "amount", DoubleType()),
        NestedField(4, "ts", TimestampType()),
    )
    target = schema_to_pyarrow(schema)
    count, total, largest, last_id = 0, 0, 0, -1
    for batch in read_source(path, schema, batch_bytes=1 << 20):
        assert batch.schema.equals(target, check_metadata=True)
        count += 1
        total += batch.num_rows
        largest = max(largest, batch.nbytes)
        assert batch.column(0)[0].as_py() == last_id + 1
        last_id = batch.column(0)[-1].as_py()
    assert total == rows
    assert count >= 25
    assert largest < 4 << 20


def test_large_parquet_streams_in_bounded_batches(tmp_path: Path) -> None:
    n = 1_000_000
    path = write_parquet(tmp_path / "big.parquet", {"id": pa.array(range(n), pa.int64()), "junk": ["j"] * n})
    sizes = [b.nbytes for b in read_source(path, SMALL, batch_bytes=1 << 20, mode=SchemaMode.IGNORE)]
    assert len(sizes) >= 8
    assert max(sizes) < 4 << 20
