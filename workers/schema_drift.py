"""What a task's sources add to the table's schema, and the schema the task writes with.

Discovery (:func:`discover`): a Parquet file's own schema, exact; a CSV file's header, with the types
pyarrow infers from the file's first ``DISCOVERY_BYTES`` (used only for columns the table lacks: text
carries no types, so existing columns keep being parsed at their table type); a JSON-lines file's
keys and types as pyarrow infers them from its first ``DISCOVERY_BYTES``. Every span of a file
discovers from the file's start, so tasks reading different spans of one file agree.

Drift (:func:`diff`): the columns the table lacks (top level, inside structs, list elements and map
values), and, for Parquet, the columns whose type Iceberg widens to the source's (int→long,
float→double, decimal precision up at the same scale) and the narrowings it cannot make (a double into
an int column, a decimal of another scale).

Schema mode evolve (:func:`evolve_task_schema`): every new column path is reserved for the job (first
writer wins, so every host writes a column under the same field id) and the task writes with the
table's schema plus those fields and widenings, recorded in its manifest descriptor for the commit
(:mod:`app.iceberg.schema_evolution`).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pyiceberg.io.pyarrow import _ConvertToIcebergWithoutIDs
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.types import (
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    PrimitiveType,
    StringType,
    StructType,
    TimeType,
)

from app.errors import SourceError
from app.formats import SourceFormat
from app.iceberg.schema_evolution import (
    MAX_FIELD_ID,
    RESERVED_ID_GAP,
    ROOT,
    WIDENINGS,
    FieldRequest,
    FieldReserver,
    NewField,
    SchemaChange,
    SchemaMode,
    evolve_schema,
    parse_type,
    promotes,
    wider,
)
from workers.record_ranges import Span, open_bytes

DISCOVERY_BYTES = 4 << 20
_CONVERT = _ConvertToIcebergWithoutIDs(downcast_ns_timestamp_to_us=True)
_NUMERIC = (IntegerType, LongType, FloatType, DoubleType, DecimalType)


def discover(path: pathlib.Path, fmt: SourceFormat) -> pa.Schema:
    """The source's columns with their (Parquet: declared; CSV/JSON: inferred) Arrow types."""
    try:
        if fmt.name == "parquet":
            return pq.read_schema(path)
        with open_bytes(path, fmt.gzip, None, guard_cr=fmt.name == "csv") as stream:
            if fmt.name == "csv":
                return pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(block_size=DISCOVERY_BYTES),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True),
                ).schema
            return pajson.open_json(
                stream, read_options=pajson.ReadOptions(block_size=DISCOVERY_BYTES)
            ).schema
    except pa.ArrowInvalid as exc:
        if "Empty" in str(exc):
            return pa.schema([])
        raise SourceError(f"{path}: cannot be read: {exc}") from exc
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: cannot be read: {exc}") from exc


def iceberg_primitive(t: pa.DataType) -> PrimitiveType | None:
    """The Iceberg type a new column of Arrow type ``t`` gets (None: Iceberg has none for it). A column
    with no values to infer from (Arrow's null type) becomes a string."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t):
        return StringType()
    if pa.types.is_time(t):
        return TimeType()
    try:
        converted = _CONVERT.primitive(t)
    except (TypeError, ValueError):
        return None
    return converted if isinstance(converted, PrimitiveType) else None


def _children(t: pa.DataType) -> list[pa.Field]:
    return [t.field(i) for i in range(t.num_fields)]


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


@dataclass
class Drift:
    new: list[tuple[tuple[str, ...], pa.DataType, int]] = field(default_factory=list)  # path, type, parent id
    widen: dict[int, tuple[str, PrimitiveType]] = field(default_factory=dict)  # field id -> (column, type)
    narrow: list[str] = field(default_factory=list)  # why, for each column Iceberg cannot change

    def describe_new(self) -> str:
        return ", ".join(f"'{'.'.join(p)}' ({_describe(t)})" for p, t, _ in self.new)


def _describe(t: pa.DataType) -> str:
    prim = None if pa.types.is_nested(t) else iceberg_primitive(t)
    return str(prim) if prim is not None else str(t)


def diff(schema: Schema, source: pa.Schema, typed: bool) -> Drift:
    """What ``source`` has that ``schema`` lacks; with ``typed`` (Parquet), the widenings and narrowings."""
    drift = Drift()
    _struct(schema.as_struct(), ROOT, (), list(source), typed, drift)
    return drift


def _struct(
    struct: StructType,
    parent: int,
    prefix: tuple[str, ...],
    fields: list[pa.Field],
    typed: bool,
    drift: Drift,
) -> None:
    by_name = {f.name: f for f in struct.fields}
    for af in fields:
        path = (*prefix, af.name)
        f = by_name.get(af.name)
        if f is None:
            drift.new.append((path, af.type, parent))
        else:
            _field(f, path, af.type, typed, drift)


def _field(f: NestedField, path: tuple[str, ...], at: pa.DataType, typed: bool, drift: Drift) -> None:
    t = f.field_type
    if pa.types.is_dictionary(at):
        at = at.value_type
    if isinstance(t, StructType) and pa.types.is_struct(at):
        _struct(t, f.field_id, path, _children(at), typed, drift)
    elif isinstance(t, ListType) and _is_list(at):
        _field(t.element_field, (*path, "element"), at.value_type, typed, drift)
    elif isinstance(t, MapType) and pa.types.is_map(at):
        _field(t.value_field, (*path, "value"), at.item_type, typed, drift)
    elif isinstance(t, PrimitiveType) and typed and not pa.types.is_nested(at):
        source = iceberg_primitive(at)
        if source is None or source == t:
            return
        name = ".".join(path)
        if promotes(t, source):
            drift.widen[f.field_id] = (name, source)
        elif isinstance(source, _NUMERIC) and isinstance(t, _NUMERIC) and not _holds(t, source):
            drift.narrow.append(
                f"column '{name}' is {source} in the source but {t} in the table, and Iceberg cannot change "
                f"{t} to {source} (it widens {WIDENINGS})"
            )


def _holds(column: IcebergType, value: IcebergType) -> bool:
    """Whether a column of type ``column`` holds values of type ``value`` (checked value by value)."""
    integral = isinstance(value, (IntegerType, LongType))
    return promotes(value, column) or (integral and isinstance(column, (FloatType, DoubleType, DecimalType)))


def _requests(
    path: tuple[str, ...], at: pa.DataType, parent: int | tuple[str, ...], where: str
) -> list[FieldRequest]:
    """One reservation request per field of a new column (its children after it)."""
    if pa.types.is_dictionary(at):
        at = at.value_type
    if pa.types.is_struct(at):
        out = [FieldRequest(path, "struct", parent)]
        for child in _children(at):
            out += _requests((*path, child.name), child.type, path, where)
        return out
    if _is_list(at):
        return [
            FieldRequest(path, "list", parent),
            *_requests((*path, "element"), at.value_type, path, where),
        ]
    if pa.types.is_map(at):
        key = _requests((*path, "key"), at.key_type, path, where)
        return [
            FieldRequest(path, "map", parent),
            *key,
            *_requests((*path, "value"), at.item_type, path, where),
        ]
    prim = iceberg_primitive(at)
    if prim is None:
        raise SourceError(f"{where}: column '{'.'.join(path)}' is {at}, which an Iceberg column cannot hold")
    return [FieldRequest(path, str(prim), parent)]


def _reconcile(reserved: str, wanted: str, column: str, where: str) -> str:
    """The type a task writes a reserved column with: the wider of the job's and this source's."""
    if reserved == wanted:
        return reserved
    if "struct" in (reserved, wanted) or "list" in (reserved, wanted) or "map" in (reserved, wanted):
        both = None
    else:
        have, want = parse_type(reserved), parse_type(wanted)
        both = wider(have, want) or (have if _holds(have, want) else None)
    if both is None:
        raise SourceError(
            f"{where}: column '{column}' is {wanted} here, but the job added it as {reserved} (reserved by the task "
            f"that met it first), and Iceberg cannot change {reserved} to {wanted} (it widens {WIDENINGS})"
        )
    return str(both)


def evolve_task_schema(
    base: Schema,
    spec: PartitionSpec,
    sources: list[tuple[pathlib.Path, SourceFormat]],
    reserve: FieldReserver,
    last_column_id: int,
) -> tuple[Schema, SchemaChange]:
    """The schema a task writes its sources with in schema mode evolve, and the change it makes."""
    found: list[tuple[str, tuple[str, ...], str]] = []  # (source, column path, type) for every new field
    requests: dict[tuple[str, ...], FieldRequest] = {}
    widen: dict[int, PrimitiveType] = {}
    partition_sources = {p.source_id for p in spec.fields}
    for path, fmt in dict.fromkeys(sources):
        drift = diff(base, discover(path, fmt), typed=fmt.name == "parquet")
        if drift.narrow:
            raise SourceError(f"{path}: " + "; ".join(drift.narrow))
        for field_id, (name, t) in drift.widen.items():
            if field_id in partition_sources:
                raise SourceError(
                    f"{path}: column '{name}' is {t} in the source but {base.find_field(field_id).field_type} in "
                    "the table, and it is a partition source: Floe does not widen partition source columns"
                )
            both = wider(widen.get(field_id, t), t)
            widen[field_id] = both if isinstance(both, PrimitiveType) else t
        for column, at, parent in drift.new:
            for r in _requests(column, at, parent, str(path)):
                requests.setdefault(r.path, r)
                found.append((str(path), r.path, r.type))
    if not requests and not widen:
        return base, SchemaChange()
    floor = last_column_id + RESERVED_ID_GAP + 1
    if floor > MAX_FIELD_ID:
        raise SourceError(
            f"the table's last column id {last_column_id} leaves no field ids to add columns with"
        )
    reserved = {r.path: r for r in reserve(floor, list(requests.values()))}
    types = {p: r.type for p, r in reserved.items()}
    for where, column, wanted in found:
        types[column] = _reconcile(types[column], wanted, ".".join(column), where)
    change = SchemaChange(
        tuple(NewField(r.field_id, r.parent_id, r.path[-1], types[p]) for p, r in reserved.items()),
        tuple((field_id, str(t)) for field_id, t in sorted(widen.items())),
    )
    return evolve_schema(base, change), change


class Refusal:
    """Refusing source columns the schema lacks (schema modes strict and evolve)."""

    def __init__(
        self, path: pathlib.Path, gz: bool, span: Span | None, schema: Schema, mode: SchemaMode
    ) -> None:
        self.path, self.gz, self.span, self.schema, self.mode = path, gz, span, schema, mode

    def error(self, columns: str) -> SourceError:
        if self.mode == SchemaMode.EVOLVE:
            return SourceError(
                f"{self.path}: the table has no column(s) {columns}, and the task did not find them when it "
                f"discovered the file's columns (a JSON-lines file's are found in its first {DISCOVERY_BYTES >> 20} "
                "MiB); nothing was added: put a line holding every key first"
            )
        return SourceError(
            f"{self.path}: the table has no column(s) {columns}; the job's schema mode is strict (start the job "
            "with schema mode evolve to add them to the table, or ignore to leave them out)"
        )


# --- naming what a JSON-lines file holds that the table lacks (on the error path only) -------------


def unknown_json_keys(
    path: pathlib.Path, gz: bool, span: Span | None, schema: Schema, limit: int = 10
) -> list[str]:
    """The keys (dotted, for nested objects) in the file's lines that ``schema`` has no column for."""
    found: dict[str, None] = {}
    with open_bytes(path, gz, span) as stream:
        for line in _lines(stream):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            _unknown(record, schema.as_struct(), "", found)
            if len(found) >= limit:
                break
    return list(found)


def _lines(stream: pa.NativeFile) -> Iterator[bytes]:
    rest = b""
    while chunk := stream.read(1 << 20):
        rest += chunk
        *lines, rest = rest.split(b"\n")
        yield from (line for line in lines if line.strip())
    if rest.strip():
        yield rest


def _unknown(value: object, t: IcebergType, prefix: str, found: dict[str, None]) -> None:
    if isinstance(value, dict) and isinstance(t, StructType):
        names = {f.name: f for f in t.fields}
        for key, child in value.items():
            name = f"{prefix}{key}"
            if key not in names:
                found[name] = None
            else:
                _unknown(child, names[key].field_type, f"{name}.", found)
    elif isinstance(value, list) and isinstance(t, ListType):
        for item in value:
            _unknown(item, t.element_type, prefix, found)
    elif isinstance(value, dict) and isinstance(t, MapType):
        for item in value.values():
            _unknown(item, t.value_type, prefix, found)
