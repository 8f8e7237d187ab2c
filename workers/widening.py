"""Widening a column by its values, for text sources in schema mode evolve.

CSV and JSON lines carry no types, so a typed comparison (Parquet's, in :mod:`workers.schema_drift`)
cannot say that a column must widen. In schema mode evolve a text source's int and decimal columns
are read at their widest type (long, decimal(38, s)) and narrowed here to the column's type, batch by
batch; a value that does not fit widens the column (int to long, a decimal's precision up to the
digits the values need) and the task's writer goes on with the widened schema (the files it already
wrote keep the narrower type, which readers widen). Top-level columns only; a partition source column
is never widened: its values must fit, as in schema mode strict.
"""

from __future__ import annotations

import pathlib

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.types import DecimalType, IcebergType, IntegerType, LongType, NestedField

from app.errors import SourceError
from app.iceberg.schema_evolution import SchemaChange, evolve_schema
from workers.datafiles import DataFileWriter

MAX_DECIMAL_PRECISION = 38


class TextWidening:
    """The schema a task writes with while its text sources may still widen it."""

    def __init__(
        self, base: Schema, change: SchemaChange, spec: PartitionSpec, writer: DataFileWriter
    ) -> None:
        self.base = base
        self.change = change
        self.schema = evolve_schema(base, change)
        self.writer = writer
        self._fixed = {p.source_id for p in spec.fields}  # partition sources never widen

    def _widest(self, f: NestedField) -> IcebergType:
        t = f.field_type
        if f.field_id in self._fixed:
            return t
        if isinstance(t, IntegerType):
            return LongType()
        if isinstance(t, DecimalType):
            return DecimalType(MAX_DECIMAL_PRECISION, t.scale)
        return t

    def read_schema(self) -> Schema:
        """The schema to read a text source with: int and decimal columns at their widest."""
        fields = [f.model_copy(update={"field_type": self._widest(f)}) for f in self.schema.fields]
        return Schema(
            *fields, schema_id=self.schema.schema_id, identifier_field_ids=self.schema.identifier_field_ids
        )

    def fit(self, path: pathlib.Path, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` (read with :meth:`read_schema`) in the task's schema, widening columns it overflows."""
        arrays = []
        target = schema_to_pyarrow(self.schema)
        for i, f in enumerate(self.schema.fields):
            col = batch.column(i)
            if col.type != target.field(i).type:
                try:
                    col = pc.cast(col, target.field(i).type, safe=True)
                except (pa.ArrowInvalid, ValueError) as exc:
                    col = self._widen(path, f, col, exc)
            arrays.append(col)
        return pa.RecordBatch.from_arrays(arrays, schema=schema_to_pyarrow(self.schema))

    def _widen(self, path: pathlib.Path, f: NestedField, col: pa.Array, exc: Exception) -> pa.Array:
        for t in self._candidates(f):
            arrow = pa.decimal128(t.precision, t.scale) if isinstance(t, DecimalType) else pa.int64()
            try:
                widened = pc.cast(col, arrow, safe=True)
            except (pa.ArrowInvalid, ValueError):
                continue
            self.change = SchemaChange.union([self.change, SchemaChange((), ((f.field_id, str(t)),))])
            self.schema = evolve_schema(self.base, self.change)
            self.writer.evolve(self.schema)
            return widened
        source = (
            "long" if pa.types.is_integer(col.type) else f"decimal({col.type.precision}, {col.type.scale})"
        )
        raise SourceError(
            f"{path}: column '{f.name}' cannot be cast from {source} to {f.field_type}: {exc}"
        ) from exc

    def _candidates(self, f: NestedField) -> list[IcebergType]:
        t = f.field_type
        if f.field_id in self._fixed:
            return []
        if isinstance(t, IntegerType):
            return [LongType()]
        if isinstance(t, DecimalType):
            return [DecimalType(p, t.scale) for p in range(t.precision + 1, MAX_DECIMAL_PRECISION + 1)]
        return []
