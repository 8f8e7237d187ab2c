"""Creating tables for demos and first steps: from a schema file or a sample source file."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import ValidationError
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import (
    BucketTransform,
    DayTransform,
    HourTransform,
    IdentityTransform,
    MonthTransform,
    Transform,
    TruncateTransform,
    YearTransform,
)

from app.errors import AlreadyExists, InvalidArgument, SourceError
from app.formats import SourceFormat, source_format

_TERM = re.compile(r"^\s*(?:(\w+)(?:\[(\d+)\])?\(\s*([\w.]+)\s*\)|([\w.]+))\s*$")
_SIMPLE = {
    "identity": IdentityTransform,
    "year": YearTransform,
    "month": MonthTransform,
    "day": DayTransform,
    "hour": HourTransform,
}


def parse_partition_spec(text: str, schema: Schema) -> PartitionSpec:
    """'category,day(ts),bucket[16](id)' -> a PartitionSpec over ``schema``."""
    if not text.strip():
        return PartitionSpec()
    fields = []
    names: set[str] = set()
    column_names = {f.name for f in schema.fields}
    for i, term in enumerate(text.split(",")):
        m = _TERM.match(term)
        if not m:
            raise InvalidArgument(f"partition term {term!r} is not COLUMN or TRANSFORM(COLUMN)")
        name, arg, column = (
            (m.group(1), m.group(2), m.group(3)) if m.group(3) else ("identity", None, m.group(4))
        )
        try:
            source = schema.find_field(column)
        except ValueError:
            raise InvalidArgument(f"partition term {term!r}: the schema has no column {column!r}") from None
        transform: Transform[Any, Any]
        if name in _SIMPLE and arg is None:
            transform = _SIMPLE[name]()
        elif name in ("bucket", "truncate") and arg is not None:
            if int(arg) < 1:
                raise InvalidArgument(f"partition term {term!r}: the {name} width must be at least 1")
            transform = BucketTransform(int(arg)) if name == "bucket" else TruncateTransform(int(arg))
        else:
            raise InvalidArgument(
                f"partition term {term!r}: unknown transform {name!r} (identity, year, month, day, hour, bucket[N], truncate[W])"
            )
        if not transform.can_transform(source.field_type):
            raise InvalidArgument(
                f"partition term {term!r}: {name} cannot apply to {column} ({source.field_type})"
            )
        suffix = "" if name == "identity" else f"_{name}"
        field_name = f"{column.replace('.', '_')}{suffix}"
        if field_name in names:
            raise InvalidArgument(f"partition term {term!r} gives partition field {field_name!r} twice")
        if name != "identity" and field_name in column_names:
            raise InvalidArgument(
                f"partition term {term!r}: its partition field {field_name!r} would clash with the column of that name"
            )
        names.add(field_name)
        fields.append(PartitionField(source.field_id, 1000 + i, transform, field_name))
    return PartitionSpec(*fields)


def schema_from_file(path: Path) -> Schema:
    try:
        return Schema.model_validate_json(path.read_text())
    except OSError as exc:
        raise InvalidArgument(f"{path}: cannot be read: {exc}") from None
    except ValidationError as exc:
        raise InvalidArgument(f"{path}: not an Iceberg schema: {exc.errors()[0]['msg']}") from None


def schema_from_sample(path: Path) -> Schema:
    from pyiceberg.io.pyarrow import _ConvertToIcebergWithoutIDs, visit_pyarrow
    from pyiceberg.schema import assign_fresh_schema_ids

    fmt = source_format(path)
    try:
        arrow = _sample_arrow_schema(path, fmt)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: cannot infer a schema: {exc}") from None
    arrow = pa.schema(
        [f.with_type(pa.timestamp("us", f.type.tz)) if pa.types.is_timestamp(f.type) else f for f in arrow]
    )
    return assign_fresh_schema_ids(visit_pyarrow(arrow, _ConvertToIcebergWithoutIDs()))


def _sample_arrow_schema(path: Path, fmt: SourceFormat) -> pa.Schema:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    if fmt.name == "parquet":
        return pq.read_schema(path)
    stream = pa.input_stream(str(path), compression="gzip" if fmt.gzip else None)
    with stream:
        if fmt.name == "csv":
            return pacsv.open_csv(stream).schema
        return pajson.open_json(stream).schema


def create_table(
    catalog: Catalog,
    identifier: str,
    schema_file: str | None = None,
    sample: str | None = None,
    partition_by: str = "",
    properties: dict[str, str] | None = None,
) -> Table:
    namespace, _, name = identifier.rpartition(".")
    if not namespace or not name:
        raise InvalidArgument(f"table {identifier!r} must be NAMESPACE.TABLE")
    schema = schema_from_file(Path(schema_file)) if schema_file else schema_from_sample(Path(sample or ""))
    spec = parse_partition_spec(partition_by, schema)
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(namespace)
    try:
        return catalog.create_table(
            identifier, schema=schema, partition_spec=spec, properties=properties or {}
        )
    except TableAlreadyExistsError:
        raise AlreadyExists(f"table {identifier} already exists") from None
