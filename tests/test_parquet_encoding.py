"""Each data file dictionary-encodes only the columns where a dictionary pays for itself."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.iceberg import begin_distributed_snapshot, commit_distributed_snapshot
from tests.support.catalogs import CatalogHandle
from tests.support.tables import make_table, read_ids, rows, write_csv
from workers.conversion import write_task_manifest
from workers.parquet_encoding import MIN_ROWS, dictionary_columns, distinct_in


def test_a_sample_without_repeats_means_every_value_is_distinct() -> None:
    assert distinct_in(1_000_000, 8192, 8192) == 1_000_000


@pytest.mark.parametrize("pool", [100, 5_000, 50_000, 300_000])
def test_the_pool_seen_through_a_sample_extrapolates_to_the_row_group(pool: int) -> None:
    rng = random.Random(pool)
    sample = [rng.randrange(pool) for _ in range(8192)]
    rows_in_group = 1_000_000
    expected = pool * (1 - (1 - 1 / pool) ** rows_in_group)
    estimate = distinct_in(rows_in_group, len(sample), len(set(sample)))
    assert abs(estimate - expected) / expected < 0.25, (estimate, expected)


def _columns(n: int, seed: int = 7) -> dict[str, pa.Array]:
    rng = random.Random(seed)
    return {
        "id": pa.array(range(n), pa.int64()),
        "category": pa.array([rng.choice("abcdefgh") for _ in range(n)]),
        "user": pa.array([f"user-{rng.randrange(1000)}" for _ in range(n)]),
        "note": pa.array([f"{rng.getrandbits(64):016x} free text" for _ in range(n)]),
        "amount": pa.array([rng.random() for _ in range(n)]),
        "qty": pa.array([rng.randrange(100) for _ in range(n)], pa.int32()),
        "empty": pa.array([None] * n, pa.string()),
    }


def test_unique_columns_are_plain_and_repeating_ones_keep_their_dictionary() -> None:
    table = pa.table(_columns(100_000))
    chosen = dictionary_columns(table, table.column_names)
    assert chosen == ["category", "user", "qty", "empty"]


def test_sorted_runs_of_one_value_keep_the_dictionary() -> None:
    # 50 rows per timestamp, sorted: dictionary + RLE encode runs well, and the runs are sampled as runs
    n = 100_000
    table = pa.table({"ts": pa.array([i // 50 for i in range(n)], pa.int64())})
    assert dictionary_columns(table, ["ts"]) == ["ts"]


def test_nested_leaves_and_small_tables_keep_the_default() -> None:
    n = 20_000
    table = pa.table({"id": pa.array(range(n), pa.int64()), "s": pa.array([{"x": i} for i in range(n)])})
    assert dictionary_columns(table, ["id", "s.x"]) == ["s.x"]
    small = table.slice(0, MIN_ROWS - 1)
    assert dictionary_columns(small, ["id", "s.x"]) == ["id", "s.x"]


def _encodings(path: str) -> dict[str, set[str]]:
    meta = pq.ParquetFile(path.removeprefix("file://")).metadata
    group = meta.row_group(0)
    return {
        group.column(i).path_in_schema: set(group.column(i).encodings) for i in range(meta.num_columns)
    }


def test_data_files_written_by_a_task_use_the_choice(sqlite_catalog: CatalogHandle, tmp_path: Path) -> None:
    table = make_table(sqlite_catalog.catalog, "ns.t")
    snapshot = begin_distributed_snapshot(table)
    source = write_csv(tmp_path / "a.csv", rows(0, 20_000))
    manifest = write_task_manifest(snapshot, table, [source], "t1")
    assert manifest is not None and len(manifest.data_files) == 1
    encodings = _encodings(manifest.data_files[0])
    dictionary = {"RLE_DICTIONARY", "PLAIN_DICTIONARY"}
    # id, name (distinct per row), ts (a distinct second per row) and amount are unique: plain
    for column in ("id", "name", "ts", "amount"):
        assert not encodings[column] & dictionary, (column, encodings[column])
    assert encodings["category"] & dictionary
    commit_distributed_snapshot(table, snapshot, [manifest])
    assert read_ids(sqlite_catalog.catalog.load_table("ns.t")) == list(range(20_000))
