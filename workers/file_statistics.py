"""A data file's Iceberg statistics from its Parquet footer: pyiceberg's, with the per-column work done once.

pyiceberg computes them in two steps for every file it writes:
``data_file_statistics_from_parquet_metadata`` folds the row groups' column statistics, and
``DataFileStatistics.to_serialized_dict`` turns the folded minima and maxima into bound bytes. Per column,
both build the same objects again and again (a metrics mode, a truncate transform, a type comparison
through pydantic): about a fifth of a tiny task's conversion, profiled. Here that part is made once per
statistics plan (:func:`column_rules`, kept per schema by :mod:`workers.schema_cache`) and the fold
calls it. The result is the serialized dictionary pyiceberg's two steps return, key for key; a test holds
the two side by side (tests/test_file_statistics.py), so a pyiceberg upgrade that changes them shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow
import pyarrow.parquet as pq
from pyiceberg.conversions import to_bytes
from pyiceberg.io.pyarrow import MetricModeTypes, StatisticsCollector, StatsAggregator
from pyiceberg.transforms import TruncateTransform
from pyiceberg.types import BinaryType, DecimalType, PrimitiveType, StringType
from pyiceberg.utils.decimal import unscaled_to_decimal
from pyiceberg.utils.truncate import truncate_upper_bound_binary_string, truncate_upper_bound_text_string

log = logging.getLogger(__name__)


@dataclass
class ColumnRule:
    """What the statistics plan says about one field, resolved once."""

    field_id: int
    name: str
    iceberg_type: PrimitiveType
    counts: bool  # value counts collected (metrics mode not "none")
    nulls_only: bool  # null counts but no bounds (metrics mode "counts")
    decimal_scale: int | None  # a decimal whose Parquet statistics are unscaled integers
    lower: Callable[[Any], bytes]
    upper: Callable[[Any], bytes | None]
    checked_physical: set[str] = field(default_factory=set)  # physical types seen to match the field's

    def check_physical(self, physical_type: str) -> None:
        """Refuse a Parquet physical type pyiceberg would refuse for this field, with the same message."""
        if physical_type in self.checked_physical:
            return
        try:
            StatsAggregator(self.iceberg_type, physical_type, None)
        except ValueError as e:
            raise ValueError(f"{e} for column '{self.name}'") from e
        self.checked_physical.add(physical_type)


def _rule(collector: StatisticsCollector) -> ColumnRule:
    iceberg_type = collector.iceberg_type
    length = collector.mode.length
    encode = to_bytes.dispatch(type(iceberg_type))  # type: ignore[attr-defined]

    def serialize(value: Any) -> bytes:
        return encode(iceberg_type, value)  # type: ignore[no-any-return]

    if length is None:
        lower = serialize
    else:
        cut = TruncateTransform(width=length).transform(iceberg_type)

        def lower(value: Any) -> bytes:
            return serialize(cut(value))

    is_text, is_binary = iceberg_type == StringType(), iceberg_type == BinaryType()

    def upper(value: Any) -> bytes | None:
        if is_text:
            if not isinstance(value, str):
                raise ValueError("Expected the current_max to be a string")
            text = truncate_upper_bound_text_string(value, length)
            return serialize(text) if text is not None else None
        if is_binary:
            if not isinstance(value, bytes):
                raise ValueError("Expected the current_max to be bytes")
            raw = truncate_upper_bound_binary_string(value, length)
            return serialize(raw) if raw is not None else None
        if length is not None:
            raise ValueError(f"{iceberg_type} cannot be truncated")
        return serialize(value)

    kind = collector.mode.type
    return ColumnRule(
        field_id=collector.field_id,
        name=collector.column_name,
        iceberg_type=iceberg_type,
        counts=kind != MetricModeTypes.NONE,
        nulls_only=kind == MetricModeTypes.COUNTS,
        decimal_scale=iceberg_type.scale if isinstance(iceberg_type, DecimalType) else None,
        lower=lower,
        upper=upper,
    )


def column_rules(plan: dict[int, StatisticsCollector]) -> dict[int, ColumnRule]:
    """The rule of every field of a statistics plan (``compute_statistics_plan``'s result)."""
    return {field_id: _rule(collector) for field_id, collector in plan.items()}


def serialized_statistics(
    metadata: pq.FileMetaData, rules: dict[int, ColumnRule], column_ids: dict[str, int]
) -> dict[str, Any]:
    """``data_file_statistics_from_parquet_metadata(...).to_serialized_dict()``, computed with ``rules``."""
    column_sizes: dict[int, int] = {}
    value_counts: dict[int, int] = {}
    null_value_counts: dict[int, int] = {}
    split_offsets: list[int] = []
    minima: dict[int, Any] = {}
    maxima: dict[int, Any] = {}
    invalid: set[int] = set()
    columns = range(metadata.num_columns)
    for r in range(metadata.num_row_groups):
        row_group = metadata.row_group(r)
        first = row_group.column(0)
        data_offset = first.data_page_offset
        dictionary_offset = first.dictionary_page_offset
        if first.has_dictionary_page and dictionary_offset < data_offset:
            split_offsets.append(dictionary_offset)
        else:
            split_offsets.append(data_offset)
        for pos in columns:
            column = first if pos == 0 else row_group.column(pos)
            field_id = column_ids[column.path_in_schema]
            rule = rules[field_id]
            column_sizes[field_id] = column_sizes.get(field_id, 0) + column.total_compressed_size
            if not rule.counts:
                continue
            value_counts[field_id] = value_counts.get(field_id, 0) + column.num_values
            if not column.is_stats_set:
                invalid.add(field_id)
                log.warning("PyArrow statistics missing for column %d when writing file", pos)
                continue
            try:
                statistics = column.statistics
                if statistics.has_null_count:
                    null_value_counts[field_id] = null_value_counts.get(field_id, 0) + statistics.null_count
                if rule.nulls_only:
                    continue
                physical = statistics.physical_type
                rule.check_physical(physical)
                if rule.decimal_scale is not None and physical != "FIXED_LEN_BYTE_ARRAY":
                    # unscaled integers; pyiceberg folds nothing in for a missing raw bound
                    low, high = statistics.min_raw, statistics.max_raw
                    if low is not None:
                        _fold(minima, field_id, unscaled_to_decimal(low, rule.decimal_scale), min)
                    if high is not None:
                        _fold(maxima, field_id, unscaled_to_decimal(high, rule.decimal_scale), max)
                else:
                    _fold(minima, field_id, statistics.min, min)
                    _fold(maxima, field_id, statistics.max, max)
            except pyarrow.lib.ArrowNotImplementedError as e:
                invalid.add(field_id)
                log.warning(e)
    split_offsets.sort()
    for field_id in invalid:
        minima.pop(field_id, None)
        maxima.pop(field_id, None)
        null_value_counts.pop(field_id, None)
    lower_bounds: dict[int, bytes] = {}
    upper_bounds: dict[int, bytes] = {}
    for field_id, value in minima.items():
        if value is not None:
            lower_bounds[field_id] = rules[field_id].lower(value)
    for field_id, value in maxima.items():
        if value is not None:
            bound = rules[field_id].upper(value)
            if bound is not None:
                upper_bounds[field_id] = bound
    return {
        "record_count": metadata.num_rows,
        "column_sizes": column_sizes,
        "value_counts": value_counts,
        "null_value_counts": null_value_counts,
        "nan_value_counts": {},
        "lower_bounds": lower_bounds,
        "upper_bounds": upper_bounds,
        "split_offsets": split_offsets,
    }


def _fold(bounds: dict[int, Any], field_id: int, value: Any, pick: Callable[[Any, Any], Any]) -> None:
    """pyiceberg's StatsAggregator.update_min / update_max (``pick``: min or max): the first value is
    taken even if None; after it, None is ignored."""
    current = bounds.get(field_id)
    if current is None:
        bounds[field_id] = value
    elif value is not None:
        bounds[field_id] = pick(value, current)
