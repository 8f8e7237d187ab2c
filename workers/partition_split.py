"""Splitting a batch by partition values: one sort of one integer key, then one take.

Used by Floe's data-file writer and by the benchmark's floor, so both split the same way.
"""

from __future__ import annotations

import itertools

import pyarrow as pa
import pyarrow.compute as pc


def split_rows(batch: pa.RecordBatch, columns: list[pa.Array]) -> list[tuple[tuple[object, ...], pa.RecordBatch]]:
    """``batch``'s rows grouped by the tuple of ``columns``' values (one entry per row each):
    [(values, the rows with those values)], each piece with buffers of its own.

    One take in partition order, then each piece copied out of it: cheaper than one take per piece
    (measured 0.18 against 0.23 s per 1.2 M rows), and the copy gives each piece its own buffers,
    where a slice would keep the whole batch alive while the piece waits in its partition's buffer.
    """
    order, bounds, values = group_rows(columns)
    ordered = batch.take(order)
    return [
        (value, pa.concat_batches([ordered.slice(start, end - start)]))
        for value, (start, end) in zip(values, itertools.pairwise(bounds), strict=True)
    ]


def group_rows(columns: list[pa.Array]) -> tuple[pa.Array, list[int], list[tuple[object, ...]]]:
    """Group rows by the tuple of ``columns``' values: (row order, group bounds, each group's values).

    Each column is dictionary-encoded (nulls and NaN are values like any other), the codes are
    combined into one int64 key, and that one key is sorted: Arrow sorts a single integer column
    far faster than a table on several keys (measured 5x on the benchmark's data).
    """
    key: pa.Array | None = None
    space = 1
    for col in columns:
        encoded = pc.dictionary_encode(col, null_encoding="encode")
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        code, size = pc.cast(encoded.indices, pa.int64()), len(encoded.dictionary)
        if key is not None and space * size >= 1 << 62:
            # renumber the key so far densely: at most one code per row, so no overflow
            dense = pc.dictionary_encode(key)
            key, space = pc.cast(dense.indices, pa.int64()), len(dense.dictionary)
        key = code if key is None else pc.add_checked(pc.multiply_checked(key, size), code)
        space *= size
    assert key is not None
    order = pc.sort_indices(key)
    ordered = key.take(order)
    n = len(ordered)
    change = pc.not_equal(ordered.slice(0, n - 1), ordered.slice(1))
    bounds = [0, *(i + 1 for i in pc.indices_nonzero(change).to_pylist()), n]
    values = []
    for start in bounds[:-1]:
        row = order[start].as_py()
        values.append(tuple(col[row].as_py() for col in columns))
    return order, bounds, values
