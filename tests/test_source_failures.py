"""workers.sources: unreadable, truncated and empty files are precise SourceErrors or nothing; big files stream in bounded batches."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.types import (
    DoubleType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
)

from app.errors import SourceError
from app.iceberg.schema_evolution import SchemaMode
from tests.support.source_files import (
    SMALL,
    open_text,
    source_error,
    write_parquet,
    write_source,
)
from workers.sources import read_source

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


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("a.parquet", b"id,name\n1,a\n"),  # not Parquet at all
        ("a.csv.gz", b"id,name\n1,a\n"),  # gzip that is not gzip
        ("a.jsonl", b'{"id": 1, "name": "a"}\n{"id": 2, "name": \n'),  # a malformed JSON line
        ("a.csv", b"id,name\n1,a\n2,b,c,d\n"),  # a CSV row with the wrong column count
    ],
    ids=["not-parquet", "not-gzip", "malformed-json-line", "csv-row-width"],
)
def test_a_file_not_in_its_format_is_refused_naming_it(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
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
    with open_text(path) as f:
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
