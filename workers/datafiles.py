"""Writing a task's record batches into Parquet data files: one writer per partition, rolled on bytes.

All of a task's sources flow through one ``DataFileWriter``, so small sources share files instead of
making one file per source per partition. Batches are split by partition with one sort per batch,
buffered per partition up to a row-group budget, and written with pyiceberg's Parquet writer; a file
is closed once the bytes written to it reach ``write.target-file-size-bytes`` (measured on the file,
not on in-memory Arrow as pyiceberg's own writer does). Memory stays bounded by the buffer budget.
Each file dictionary-encodes only the columns where a dictionary pays (:mod:`workers.parquet_encoding`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io import FileIO, OutputFile, OutputStream
from pyiceberg.io.pyarrow import (
    ParquetFormatWriter,
    parquet_path_to_id_mapping,
    schema_to_pyarrow,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema, sanitize_column_names
from pyiceberg.table.locations import LocationProvider
from pyiceberg.typedef import Record

from app.settings import DEFAULT_WRITE_BUFFER_BYTES
from app.values import int_property
from workers import schema_cache
from workers.file_statistics import serialized_statistics
from workers.parquet_encoding import dictionary_columns
from workers.partition_split import split_rows

TARGET_FILE_SIZE = "write.target-file-size-bytes"
ROW_GROUP_LIMIT = "write.parquet.row-group-limit"
ROW_GROUP_SIZE_BYTES = "write.parquet.row-group-size-bytes"
DEFAULT_TARGET_FILE_SIZE = 512 * 1024 * 1024
DEFAULT_ROW_GROUP_ROWS = 1_048_576
DEFAULT_ROW_GROUP_BYTES = 128 * 1024 * 1024
SPLIT_ROWS = 65_536


class _ParquetWriter(ParquetFormatWriter):
    """pyiceberg's Parquet writer, choosing each file's dictionary columns from its first row group."""

    def __init__(self, output_file: OutputFile, file_schema: Schema, properties: dict[str, str], leaf_paths: list[str]) -> None:
        super().__init__(output_file, file_schema, properties)
        self._leaf_paths = leaf_paths

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._parquet_writer_kwargs["use_dictionary"] = dictionary_columns(table, self._leaf_paths)
        super().write(table)

    def finish(self) -> tuple[int, dict[str, Any]]:
        """Close the file -> (its size in bytes, its statistics as ``DataFile.from_args`` takes them).

        The statistics are pyiceberg's ``close().to_serialized_dict()``, with the per-column work made
        once per schema (workers/file_statistics.py). The size is what the stream wrote, footer
        included: no stat of the file afterwards (on object storage, a request per file)."""
        if self._writer is None or self._fos is None:
            raise ValueError("Cannot close a writer that was never written to")
        with self._fos:
            self._writer.close()
            size = self._fos.tell()
        return size, serialized_statistics(
            self._writer.writer.metadata,
            schema_cache.statistics_rules(self._file_schema, self._properties),
            schema_cache.column_ids(self._file_schema),
        )


@dataclass
class _OpenFile:
    path: str
    writer: _ParquetWriter
    key: PartitionKey | None

    def bytes_written(self) -> int:
        fos: OutputStream | None = self.writer._fos
        return fos.tell() if fos is not None else 0


@dataclass
class _Partition:
    key: PartitionKey | None
    batches: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    nbytes: int = 0
    file: _OpenFile | None = None


class DataFileWriter:
    """Accepts batches in the table's Arrow schema; ``close()`` returns the DataFiles written."""

    def __init__(
        self,
        io: FileIO,
        schema: Schema,
        spec: PartitionSpec,
        properties: dict[str, str],
        locations: LocationProvider,
        name_prefix: str,
        on_file: Callable[[str], None] | None = None,
        buffer_bytes: int = DEFAULT_WRITE_BUFFER_BYTES,
    ) -> None:
        self._on_file = on_file
        self._io = io
        self._schema = schema
        self._spec = spec
        self._properties = properties
        self._locations = locations
        self._prefix = name_prefix
        # derived from the schema once per schema, not per task (workers/schema_cache.py)
        self._file_schema = schema_cache.sanitized(schema)
        self._arrow_file_schema = schema_cache.arrow_schema(self._file_schema)
        self._leaf_paths = list(schema_cache.column_ids(self._file_schema))
        self._target = int_property(properties, TARGET_FILE_SIZE, DEFAULT_TARGET_FILE_SIZE)
        self._group_rows = int_property(properties, ROW_GROUP_LIMIT, DEFAULT_ROW_GROUP_ROWS)
        self._budget = buffer_bytes
        self._group_bytes = min(
            int_property(properties, ROW_GROUP_SIZE_BYTES, DEFAULT_ROW_GROUP_BYTES),
            self._budget // 2,
            self._target,
        )
        # Sources are read in 1 MiB blocks: measured as fast as larger blocks for CSV, while
        # pyarrow's streaming CSV reader holds several blocks ahead, so larger blocks cost memory.
        self.read_block_bytes = 1 << 20
        self._partitions: dict[tuple[object, ...], _Partition] = {}
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._buffered = 0
        self._count = 0
        self._done: list[DataFile] = []
        self.paths: list[str] = []  # every file started, for cleanup on failure

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._spec.is_unpartitioned():
            self._route(batch)
            return
        # Partitioned: split in chunks of SPLIT_ROWS, so the per-split sort and takes are amortised
        # over more rows than one 1 MiB read block holds (profiled: split was ~25% of conversion).
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= SPLIT_ROWS:
            self._route_pending()

    def _route_pending(self) -> None:
        if not self._pending:
            return
        batch = self._pending[0] if len(self._pending) == 1 else pa.concat_batches(self._pending)
        self._pending, self._pending_rows = [], 0
        self._route(batch)

    def _route(self, batch: pa.RecordBatch) -> None:
        for values, piece in self._split(batch):
            part = self._partitions.get(values)
            if part is None:
                part = self._partitions[values] = _Partition(self._partition_key(values))
            part.batches.append(piece)
            part.rows += piece.num_rows
            part.nbytes += piece.nbytes
            self._buffered += piece.nbytes
            if part.rows >= self._group_rows or part.nbytes >= self._group_bytes:
                self._flush(part)
        while self._buffered > self._budget:
            self._flush(max(self._partitions.values(), key=lambda p: p.nbytes))

    def evolve(self, schema: Schema) -> None:
        """Write from now on with ``schema``, a widening of the current one (schema mode evolve): what is
        buffered is written and every open file finished first, under the schema it was started with
        (readers widen those files' columns, as Iceberg's type promotion allows)."""
        self._route_pending()
        for part in self._partitions.values():
            self._flush(part)
            if part.file is not None:
                self._finish(part)
        self._schema = schema
        self._file_schema = sanitize_column_names(schema)
        self._arrow_file_schema = schema_to_pyarrow(self._file_schema)
        self._leaf_paths = list(parquet_path_to_id_mapping(self._file_schema))

    def close(self) -> list[DataFile]:
        self._route_pending()
        for part in self._partitions.values():
            self._flush(part)
            if part.file is not None:
                self._finish(part)
        return list(self._done)

    def abort(self) -> list[str]:
        """Close whatever is open, without statistics; return every path started."""
        for part in self._partitions.values():
            if part.file is not None:
                try:
                    part.file.writer.close()
                except Exception:  # noqa: BLE001 - the file is deleted next; only the handle matters
                    fos = part.file.writer._fos
                    if fos is not None:
                        fos.close()
                part.file = None
        return list(self.paths)

    def _split(self, batch: pa.RecordBatch) -> list[tuple[tuple[object, ...], pa.RecordBatch]]:
        if self._spec.is_unpartitioned():
            return [((), batch)]
        columns = []
        for pfield in self._spec.fields:
            source = self._schema.find_field(pfield.source_id)
            name = self._schema.find_column_name(pfield.source_id)
            assert name is not None
            arr = batch.column(name) if "." not in name else _nested(batch, name)
            columns.append(pfield.transform.pyarrow_transform(source.field_type)(arr))
        if len(columns) == 1 and pc.count_distinct(columns[0], mode="all").as_py() == 1:
            return [((columns[0][0].as_py(),), batch)]
        return split_rows(batch, columns)

    def _partition_key(self, values: tuple[object, ...]) -> PartitionKey | None:
        if self._spec.is_unpartitioned():
            return None
        return PartitionKey(
            field_values=[PartitionFieldValue(f, v) for f, v in zip(self._spec.fields, values, strict=True)],
            partition_spec=self._spec,
            schema=self._schema,
        )

    def _flush(self, part: _Partition) -> None:
        if not part.batches:
            return
        table = pa.Table.from_batches(part.batches).rename_columns(self._arrow_file_schema.names)
        table = table.cast(self._arrow_file_schema)
        self._buffered -= part.nbytes
        part.batches, part.rows, part.nbytes = [], 0, 0
        # Write in row groups of about the group budget, rolling files on bytes actually written.
        rows_per_group = max(
            1, min(self._group_rows, table.num_rows * self._group_bytes // max(table.nbytes, 1))
        )
        for offset in range(0, table.num_rows, rows_per_group):
            if part.file is None:
                part.file = self._open(part.key)
            part.file.writer.write(table.slice(offset, rows_per_group))
            if part.file.bytes_written() >= self._target:
                self._finish(part)

    def _open(self, key: PartitionKey | None) -> _OpenFile:
        name = f"{self._prefix}-{self._count:05d}-{uuid.uuid4().hex[:12]}.parquet"
        self._count += 1
        path = self._locations.new_data_location(data_file_name=name, partition_key=key)
        self.paths.append(path)
        if self._on_file is not None:
            self._on_file(path)  # journal the path before the file exists (orphan cleanup)
        writer = _ParquetWriter(self._io.new_output(path), self._file_schema, self._properties, self._leaf_paths)
        return _OpenFile(path, writer, key)

    def _finish(self, part: _Partition) -> None:
        assert part.file is not None
        opened, part.file = part.file, None
        size, stats = opened.writer.finish()
        self._done.append(
            DataFile.from_args(
                content=DataFileContent.DATA,
                file_path=opened.path,
                file_format=FileFormat.PARQUET,
                partition=opened.key.partition if opened.key is not None else Record(),
                file_size_in_bytes=size,
                sort_order_id=None,
                spec_id=self._spec.spec_id,
                equality_ids=None,
                key_metadata=None,
                **stats,
            )
        )


def use_jemalloc_unless_configured(configured_pool: str | None) -> None:
    """Prefer Arrow's jemalloc pool (with mimalloc, RSS creeps up with the source size, measured),
    unless ``ARROW_DEFAULT_MEMORY_POOL`` chose one. Called once when a worker process starts."""
    if configured_pool:
        return
    with contextlib.suppress(NotImplementedError, pa.ArrowException):  # a build without jemalloc
        pa.set_memory_pool(pa.jemalloc_memory_pool())


def _nested(batch: pa.RecordBatch, dotted: str) -> pa.Array:
    parts = dotted.split(".")
    arr: pa.Array = batch.column(parts[0])
    for p in parts[1:]:
        arr = pc.struct_field(arr, p)
    return arr


def new_write_prefix(task_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in task_id)[:48]
    return f"{safe}-{uuid.uuid4().hex[:8]}"
