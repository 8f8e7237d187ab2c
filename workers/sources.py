"""Read one source file (parquet, CSV, JSON lines; CSV/JSON optionally gzipped) as Arrow batches.

Every batch has exactly the Arrow schema ``schema_to_pyarrow(table_schema)``: columns are matched
by name (case-sensitive), a missing optional column becomes all-null, and values are cast to the
target type. Source columns the schema lacks (top level or inside structs) are refused in schema
modes strict and evolve (evolve has added the ones it found to the schema it reads with, see
:mod:`workers.schema_drift`), naming the file and the columns, and left out in mode ignore. Reading streams with bounded memory: parquet
batch by batch, CSV and JSON block by block (``batch_bytes`` per block; one CSV row or JSON line
must fit in a block). Every failure is a :class:`SourceError` that names the file, and the
column and both types when a value cannot be cast.

Conventions worth knowing:
- timestamps with a finer unit (e.g. parquet ``timestamp[ns]``) are truncated to microseconds;
- CSV/JSON timestamps parse ISO 8601 (``T`` or space); ``timestamptz`` values need ``Z`` or an offset;
- CSV uses pyarrow's default null spellings (empty, ``NULL``, ``null``, ``NaN``, ...) except that
  string columns keep the empty string; binary columns take the raw (UTF-8) text;
- a JSON key that is absent from a line is null;
- pyarrow is fed through :func:`~workers.record_ranges.open_bytes`, which works around a pyarrow
  bug that corrupts quoted CRLFs (see there).

With a :class:`~workers.record_ranges.Span` only part of a file is read: CSV/JSON lines the bytes
``[start, end)`` (spans from ``plan_spans`` start at record boundaries; the CSV header is always
taken from the start of the file, and only a span starting at 0 contains it), parquet the row
groups ``[start, end)``. CSV values may contain quoted newlines (LF or CRLF) at any file size:
pyarrow's quote-aware block chunker (``newlines_in_values``) is always on.
"""

from __future__ import annotations

import csv
import pathlib
import re
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pyiceberg.schema import Schema

from app.errors import SourceError
from app.formats import SourceFormat, source_format
from app.iceberg.schema_evolution import SchemaMode
from workers import schema_cache
from workers.record_ranges import Span, check_span, open_bytes
from workers.schema_drift import Refusal, diff, unknown_json_keys

_CSV_COLUMN = re.compile(r"In CSV column #(\d+): (.*)", re.DOTALL)
_JSON_CHANGED = re.compile(r"Column\(/([^)/]+)[^)]*\) changed from \w+ to (\w+)")
_SIMPLE_NAMES = {
    pa.bool_(): "boolean",
    pa.int32(): "int",
    pa.int64(): "long",
    pa.float32(): "float",
    pa.float64(): "double",
    pa.date32(): "date",
}


def read_source(
    path: pathlib.Path,
    schema: Schema,
    batch_bytes: int = 16 << 20,
    span: Span | None = None,
    fmt: SourceFormat | None = None,
    mode: SchemaMode = SchemaMode.STRICT,
) -> Iterator[pa.RecordBatch]:
    """Stream ``path`` (or only its ``span``) as non-empty batches conforming to ``schema_to_pyarrow(schema)``.

    The format, the file's existence and the span's shape are checked at once; everything else
    (including errors that only surface mid-file, and a span beyond the end of the file) is raised
    as :class:`SourceError` while iterating. A span of a gzip file is a ValueError.
    """
    if batch_bytes <= 0:
        raise ValueError(f"batch_bytes must be positive, got {batch_bytes}")
    fmt = source_format(path) if fmt is None else fmt  # a task decides each source's format once
    name, gz = fmt.name, fmt.gzip
    if span is not None and not 0 <= span.start < span.end:
        raise ValueError(f"a span must have 0 <= start < end, got {span}")
    if span is not None and gz:
        raise ValueError(f"{path}: a gzip file can only be read whole, not by span")
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "no such file"
        raise SourceError(f"{path}: cannot be read: {reason}")
    target = schema_cache.arrow_schema(schema)  # the same for every task of a job: made once
    types = {f.name: str(f.field_type) for f in schema.fields}
    refusal = None if mode == SchemaMode.IGNORE else Refusal(path, gz, span, schema, mode)
    if name == "jsonl":
        return _guarded(path, _read_json(path, gz, span, target, types, batch_bytes, refusal))
    if name == "csv":
        return _guarded(path, _read_csv(path, gz, span, target, types, batch_bytes, refusal))
    batches = _read_parquet(path, gz, span, target, types, batch_bytes)
    return _guarded(path, batches if refusal is None else _checked_parquet(refusal, batches))


def _checked_parquet(refusal: Refusal, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``batches``, once the file's columns are all in the schema."""
    new = diff(refusal.schema, pq.read_schema(refusal.path), typed=False)
    if new.new:
        raise refusal.error(new.describe_new())
    yield from batches


def _guarded(path: pathlib.Path, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Drop empty batches; turn every raw read error into a SourceError naming the file."""
    try:
        for batch in batches:
            if batch.num_rows:
                yield batch
    except SourceError:
        raise
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise SourceError(f"{path}: cannot be read: {exc}") from exc


def _present(path: pathlib.Path, names: list[str], target: pa.Schema, types: dict[str, str]) -> list[str]:
    """The target columns found in ``names``; SourceError if a required one is absent."""
    have = set(names)
    for field in target:
        if not field.nullable and field.name not in have:
            raise SourceError(f"{path}: required column '{field.name}' ({types[field.name]}) is missing")
    return [f.name for f in target if f.name in have]


# --- conforming a batch to the target schema ---------------------------------------------------


def _describe(t: pa.DataType) -> str:
    """An Iceberg-style name for an Arrow type, for error messages."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    if pa.types.is_decimal(t):
        return f"decimal({t.precision}, {t.scale})"
    return _SIMPLE_NAMES.get(t, str(t))


def _cast_error(path: pathlib.Path, column: str, source: str, target: str, reason: object) -> SourceError:
    return SourceError(f"{path}: column '{column}' cannot be cast from {source} to {target}: {reason}")


def _to_uuid(col: pa.Array) -> pa.Array:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        values = [None if v is None else uuid.UUID(v).bytes for v in col.to_pylist()]
        storage = pa.array(values, pa.binary(16))
    else:
        storage = pc.cast(col, pa.binary(16))
    return pa.ExtensionArray.from_storage(pa.uuid(), storage)


def _cast(col: pa.Array, typ: pa.DataType) -> pa.Array:
    if col.type == typ:
        return col
    if typ == pa.uuid():
        return _to_uuid(col)
    if pa.types.is_time(typ) and _describe(col.type) == "string":
        # Arrow cannot cast string -> time directly; parse as a timestamp on 1970-01-01 instead.
        col = pc.cast(pc.binary_join_element_wise("1970-01-01T", col, ""), pa.timestamp("us"))
    if pa.types.is_timestamp(typ) and pa.types.is_timestamp(col.type):
        # Deliberate truncation: Iceberg timestamps are microseconds, so ns (or finer) digits drop.
        return pc.cast(col, typ, safe=False)
    return pc.cast(col, typ, safe=True)


def _conform(
    path: pathlib.Path, batch: pa.RecordBatch, target: pa.Schema, types: dict[str, str]
) -> pa.RecordBatch:
    names = batch.schema.names
    arrays = []
    for field in target:
        if field.name not in names:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        col = batch.column(names.index(field.name))
        try:
            col = _cast(col, field.type)
        except (pa.ArrowException, ValueError) as exc:
            raise _cast_error(path, field.name, _describe(col.type), types[field.name], exc) from exc
        if not field.nullable and col.null_count:
            raise SourceError(
                f"{path}: required column '{field.name}' ({types[field.name]}) "
                f"has {col.null_count} null or missing value(s)"
            )
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=target)


# --- parquet ------------------------------------------------------------------------------------


def _parquet_batch_rows(meta: pq.FileMetaData, batch_bytes: int) -> int:
    """Rows per batch so a batch holds about ``batch_bytes`` of uncompressed data."""
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if meta.num_rows == 0 or size <= 0:
        return 65536
    return max(1, min(1 << 20, batch_bytes * meta.num_rows // size))


def _read_parquet(
    path: pathlib.Path,
    gz: bool,
    span: Span | None,
    target: pa.Schema,
    types: dict[str, str],
    batch_bytes: int,
) -> Iterator[pa.RecordBatch]:
    with pq.ParquetFile(str(path)) as pf:
        columns = _present(path, pf.schema_arrow.names, target, types)
        rows = _parquet_batch_rows(pf.metadata, batch_bytes)
        groups = None
        if span is not None:
            check_span(path, span, pf.metadata.num_row_groups, "row groups")
            groups = range(span.start, span.end)
        for batch in pf.iter_batches(batch_size=rows, row_groups=groups, columns=columns):
            yield _conform(path, batch, target, types)


# --- CSV ----------------------------------------------------------------------------------------


def _csv_header(path: pathlib.Path, gz: bool, limit: int) -> list[str]:
    """The header row's column names ([] for an empty file)."""
    head = b""
    with open_bytes(path, gz) as stream:
        while b"\n" not in head and len(head) < limit:
            chunk = stream.read(1 << 16)
            if not chunk:
                break
            head += chunk
    line = head.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    return next(csv.reader([line]), []) if line else []


def _csv_type(t: pa.DataType) -> pa.DataType:
    """The type pyarrow's CSV reader should produce for a target type (uuid/fixed go via text)."""
    if t == pa.uuid():
        return pa.string()
    if pa.types.is_fixed_size_binary(t):
        return pa.binary()
    return t


def _csv_error(path: pathlib.Path, header: list[str], exc: Exception, types: dict[str, str]) -> SourceError:
    match = _CSV_COLUMN.search(str(exc))
    if match and int(match[1]) < len(header) and header[int(match[1])] in types:
        name = header[int(match[1])]
        return _cast_error(path, name, "string", types[name], match[2])
    return SourceError(f"{path}: cannot be read: {exc}")


def _read_csv(
    path: pathlib.Path,
    gz: bool,
    span: Span | None,
    target: pa.Schema,
    types: dict[str, str],
    batch_bytes: int,
    refusal: Refusal | None = None,
) -> Iterator[pa.RecordBatch]:
    header = _csv_header(path, gz, max(batch_bytes, 1 << 16))
    if refusal is not None:  # strict, evolve: every header column must be in the schema
        known = {f.name for f in refusal.schema.fields}
        extra = [c for c in header if c not in known]
        if extra:
            raise refusal.error(", ".join(f"'{c}'" for c in extra))
    if not header:
        return
    columns = _present(path, header, target, types)
    convert = pacsv.ConvertOptions(
        column_types={f.name: _csv_type(f.type) for f in target if f.name in columns},
        include_columns=columns,
    )
    # a span past the start has no header line: name its columns from the file's header
    names = header if span is not None and span.start > 0 else None
    # a file within one block is parsed by one thread: handing it to the pool costs more than it saves
    small = gz is False and (span.end - span.start if span is not None else path.stat().st_size) <= batch_bytes
    read = pacsv.ReadOptions(block_size=batch_bytes, use_threads=not small, column_names=names)
    # the quote-aware chunker: quoted values may hold newlines anywhere (it costs ~1-5% of a read)
    parse = pacsv.ParseOptions(newlines_in_values=True)
    with open_bytes(path, gz, span, guard_cr=True) as stream:
        try:
            try:
                reader = pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)
            except pa.ArrowInvalid as exc:
                if names is not None and "Empty CSV file" in str(exc):
                    return  # a span of blank lines
                raise
            for batch in reader:
                yield _conform(path, batch, target, types)
        except pa.ArrowInvalid as exc:
            raise _csv_error(path, header, exc, types) from exc


# --- JSON lines ---------------------------------------------------------------------------------


def _json_type(t: pa.DataType) -> pa.DataType:
    """The type pyarrow's JSON reader should produce (types it cannot parse are read as text)."""
    if t == pa.uuid() or pa.types.is_fixed_size_binary(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return pa.string()
    return t


def _json_batches(
    path: pathlib.Path, gz: bool, span: Span | None, schema: pa.Schema, batch_bytes: int, unexpected: str = "ignore"
) -> Iterator[pa.RecordBatch]:
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior=unexpected)
    with open_bytes(path, gz, span) as stream:
        try:
            reader = pajson.open_json(
                stream,
                read_options=pajson.ReadOptions(block_size=batch_bytes, use_threads=True),
                parse_options=parse,
            )
        except pa.ArrowInvalid as exc:
            if "Empty JSON" in str(exc):
                return
            raise
        yield from reader


def _json_culprit(
    path: pathlib.Path, gz: bool, span: Span | None, schema: pa.Schema, batch_bytes: int
) -> str | None:
    """Re-read column by column to find the one that fails (None: the JSON itself is bad)."""
    for fields in ([], *([f] for f in schema)):
        try:
            for _ in _json_batches(path, gz, span, pa.schema(fields), batch_bytes):
                pass
        except pa.ArrowInvalid:
            return fields[0].name if fields else None
    return None


def _json_kind(path: pathlib.Path, gz: bool, span: Span | None, column: str, batch_bytes: int) -> str:
    """The JSON kind of ``column``'s values: re-read it as text and see what the parser objects to."""
    try:
        for _ in _json_batches(path, gz, span, pa.schema([(column, pa.string())]), batch_bytes):
            pass
    except pa.ArrowInvalid as exc:
        match = _JSON_CHANGED.search(str(exc))
        return match[2] if match else "JSON value"
    return "string"


def _json_error(
    path: pathlib.Path,
    gz: bool,
    span: Span | None,
    exc: Exception,
    schema: pa.Schema,
    types: dict[str, str],
    batch_bytes: int,
) -> SourceError:
    match = _JSON_CHANGED.search(str(exc))
    if match and match[1] in types:
        return _cast_error(path, match[1], match[2], types[match[1]], exc)
    culprit = _json_culprit(path, gz, span, schema, batch_bytes)
    if culprit is None:
        return SourceError(f"{path}: cannot be read: {exc}")
    kind = _json_kind(path, gz, span, culprit, batch_bytes)
    return _cast_error(path, culprit, kind, types[culprit], exc)


def _read_json(
    path: pathlib.Path,
    gz: bool,
    span: Span | None,
    target: pa.Schema,
    types: dict[str, str],
    batch_bytes: int,
    refusal: Refusal | None = None,
) -> Iterator[pa.RecordBatch]:
    schema = pa.schema([pa.field(f.name, _json_type(f.type)) for f in target])
    try:
        for batch in _json_batches(path, gz, span, schema, batch_bytes, "ignore" if refusal is None else "error"):
            yield _conform(path, batch, target, types)
    except pa.ArrowInvalid as exc:
        if refusal is not None and "unexpected field" in str(exc):
            keys = unknown_json_keys(path, gz, span, refusal.schema)
            if keys:
                raise refusal.error(", ".join(f"'{k}'" for k in keys)) from exc
        raise _json_error(path, gz, span, exc, schema, types, batch_bytes) from exc
