"""workers.partition_split.group_rows: rows grouped by their partition values, checked against plain Python."""

from __future__ import annotations

import math
import random

import pyarrow as pa
import pytest

from workers.partition_split import group_rows


def _reference(columns: list[list[object]]) -> dict[tuple[object, ...], list[int]]:
    groups: dict[tuple[object, ...], list[int]] = {}
    for row, value in enumerate(zip(*columns, strict=True)):
        # NaN != NaN in Python: key it by a marker so all NaN rows are one group, as in Iceberg
        key = tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in value)
        groups.setdefault(key, []).append(row)
    return groups


def _check(columns: list[list[object]], types: list[pa.DataType]) -> None:
    arrays = [pa.array(c, t) for c, t in zip(columns, types, strict=True)]
    order, bounds, values = group_rows(arrays)
    expected = _reference(columns)
    got: dict[tuple[object, ...], list[int]] = {}
    for value, start, end in zip(values, bounds, bounds[1:], strict=False):
        key = tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in value)
        assert key not in got, f"group {value} split in two"
        got[key] = sorted(order.slice(start, end - start).to_pylist())
    assert len(values) == len(bounds) - 1
    assert got == expected


def test_groups_by_several_columns_with_nulls_and_nan() -> None:
    rng = random.Random(7)
    n = 5000
    cats = [rng.choice(["a", "b", None, "c"]) for _ in range(n)]
    days = [rng.choice([19000, 19001, None]) for _ in range(n)]
    floats = [rng.choice([0.5, float("nan"), None, -1.0]) for _ in range(n)]
    _check([cats, days, floats], [pa.string(), pa.int32(), pa.float64()])


def test_one_column_and_one_row() -> None:
    _check([["x", "y", "x"]], [pa.string()])
    _check([[None]], [pa.int64()])


@pytest.mark.parametrize("columns", [5, 8])
def test_a_key_space_beyond_int64_is_renumbered_not_overflowed(columns: int) -> None:
    # every column all-distinct: 40,000^5 > 2^62, so the combined key must be renumbered on the way
    n = 40_000
    rng = random.Random(columns)
    data = [rng.sample(range(10**9), n) for _ in range(columns)]
    data[-1] = [v % 3 for v in data[-1]]  # and the last one repeats, so groups are still per row
    _check(data, [pa.int64()] * columns)
