"""What pyiceberg derives from a table's schema for every data file, made once per schema.

For each file it writes, pyiceberg sanitizes the schema's column names, converts it to an Arrow schema,
maps Parquet column paths to field ids and plans the column statistics — the same for every file of a
table, ~0.5 ms of CPU for a tiny task's one file (profiled). These functions give the same results,
kept per schema object: a job's table (and so its schema) is loaded once per worker process
(workers/task_runner.py JobTables), and the cache holds each schema it keys on so its id stays its own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa
from pyiceberg.io.pyarrow import (
    StatisticsCollector,
    compute_statistics_plan,
    parquet_path_to_id_mapping,
    schema_to_pyarrow,
)
from pyiceberg.schema import Schema, sanitize_column_names

from workers.file_statistics import ColumnRule, column_rules

CACHED = 64
T = TypeVar("T")
_cache: OrderedDict[tuple[Any, ...], tuple[Any, ...]] = OrderedDict()
_lock = threading.Lock()


def _once(kind: str, held: tuple[Any, ...], extra: tuple[Any, ...], make: Callable[[], T]) -> T:
    key = (kind, *(id(h) for h in held), *extra)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit[0]  # type: ignore[no-any-return]
    value = make()
    with _lock:
        _cache[key] = (value, held)
        while len(_cache) > CACHED:
            _cache.popitem(last=False)
    return value


def sanitized(schema: Schema) -> Schema:
    """pyiceberg.schema.sanitize_column_names(schema), once per schema."""
    return _once("sanitized", (schema,), (), lambda: sanitize_column_names(schema))


def arrow_schema(schema: Schema) -> pa.Schema:
    """pyiceberg.io.pyarrow.schema_to_pyarrow(schema), once per schema."""
    return _once("arrow", (schema,), (), lambda: schema_to_pyarrow(schema))


def column_ids(schema: Schema) -> dict[str, int]:
    """pyiceberg.io.pyarrow.parquet_path_to_id_mapping(schema), once per schema (do not modify)."""
    return _once("columns", (schema,), (), lambda: parquet_path_to_id_mapping(schema))


def statistics_plan(schema: Schema, properties: dict[str, str]) -> dict[int, StatisticsCollector]:
    """pyiceberg.io.pyarrow.compute_statistics_plan(schema, properties), once per schema and properties."""
    return _once(
        "statistics", (schema,), tuple(sorted(properties.items())), lambda: compute_statistics_plan(schema, properties)
    )


def statistics_rules(schema: Schema, properties: dict[str, str]) -> dict[int, ColumnRule]:
    """workers.file_statistics.column_rules of the statistics plan, once per schema and properties."""
    return _once(
        "rules", (schema,), tuple(sorted(properties.items())),
        lambda: column_rules(statistics_plan(schema, properties)),
    )
