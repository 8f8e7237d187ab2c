"""A task's manifest writer, with what depends only on the table's schema and spec made once.

pyiceberg's ManifestWriter builds, for every manifest it opens, the manifest-entry schema for the
table's partition type, an Avro writer tree resolved against the read schema, the Avro schema JSON of
the file header and the header's metadata (the table schema and spec as JSON). For one table all of it
is the same every time, and a task writes one manifest: measured on tiny tasks, it was 0.7 ms of the
4.6 ms of CPU a task body took. :func:`write_manifest` is pyiceberg's (same arguments, same files)
with those parts kept per (schema, spec, codec) — the schema and spec objects themselves are the key
(a job's table is loaded once per worker process, app's JobTables), held by the cache so their ids
stay theirs; the encoded header too, but for its sync marker. The file is encoded in memory by
:class:`_BufferEncoder` (pyiceberg's encoder, writing whole varints into a bytearray instead of one
stream call per byte) and written in one call when it is complete. Anything else about the file is
pyiceberg's own writing: entries, counts, summaries — the same bytes (tests/test_manifest_writer.py).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pyiceberg.avro.encoder import BinaryEncoder
from pyiceberg.avro.file import (
    _SCHEMA_KEY,
    AVRO_CODEC_KEY,
    CODEC_MAPPING_ICEBERG_TO_AVRO,
    MAGIC,
    META_SCHEMA,
    SYNC_SIZE,
    AvroFileHeader,
    AvroOutputFile,
)
from pyiceberg.avro.resolver import construct_writer, resolve_writer
from pyiceberg.avro.writer import Writer
from pyiceberg.io import InputFile, OutputFile, OutputStream
from pyiceberg.manifest import (
    DEFAULT_READ_VERSION,
    ManifestEntry,
    ManifestWriter,
    ManifestWriterV1,
    ManifestWriterV2,
)
from pyiceberg.manifest import write_manifest as pyiceberg_write_manifest
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.utils.schema_conversion import AvroSchemaConversion

SCHEMA_NAME = "manifest_entry"
CACHED = 32  # (schema, spec, codec) combinations kept per process


@dataclass(frozen=True)
class _Prepared:
    schema: Schema  # held: the cache's key is its id
    spec: PartitionSpec
    file_schema: Schema
    writer: Writer
    schema_json: str
    meta: dict[str, str]
    header: bytes  # the encoded file header but for its sync marker (the last SYNC_SIZE bytes)


class _BufferEncoder(BinaryEncoder):
    """pyiceberg's BinaryEncoder into a bytearray: the same bytes, a varint in one go."""

    def __init__(self, out: bytearray) -> None:
        self._out = out

    def write(self, b: bytes) -> None:
        self._out += b

    def write_boolean(self, boolean: bool) -> None:
        self._out.append(1 if boolean else 0)

    def write_int(self, integer: int) -> None:
        datum = (integer << 1) ^ (integer >> 63)  # zig-zag, then 7 bits a byte: as pyiceberg's
        out = self._out
        while (datum & ~0x7F) != 0:
            out.append((datum & 0x7F) | 0x80)
            datum >>= 7
        out.append(datum)


def _encoded_header(meta: dict[str, str], schema_json: str) -> bytes:
    global _header_writer
    codec = meta[AVRO_CODEC_KEY]
    full = {**meta, _SCHEMA_KEY: schema_json, AVRO_CODEC_KEY: CODEC_MAPPING_ICEBERG_TO_AVRO.get(codec, codec)}
    if _header_writer is None:
        _header_writer = construct_writer(META_SCHEMA)
    out = bytearray()
    _header_writer.write(_BufferEncoder(out), AvroFileHeader(MAGIC, full, bytes(SYNC_SIZE)))
    return bytes(out[:-SYNC_SIZE])


_prepared: OrderedDict[tuple[Any, ...], _Prepared] = OrderedDict()
_lock = threading.Lock()
_header_writer: Writer | None = None


class _WrittenFile(OutputFile):
    """The manifest's output file, whose length is what was written to it: pyiceberg's
    ``to_manifest_file`` asks for it, which would otherwise stat the file (a request on object storage)."""

    def __init__(self, file: OutputFile, written: bytearray) -> None:
        super().__init__(file.location)
        self._file = file
        self._written = written

    def __len__(self) -> int:
        return len(self._written)

    def exists(self) -> bool:
        return self._file.exists()

    def to_input_file(self) -> InputFile:
        return self._file.to_input_file()

    def create(self, overwrite: bool = False) -> OutputStream:
        return self._file.create(overwrite)


class _PreparedAvroOutputFile(AvroOutputFile[ManifestEntry]):
    """pyiceberg's Avro output file, given its writer and header instead of deriving them, encoded in
    memory and written when complete (nothing is written when the manifest fails)."""

    def __init__(self, output_file: OutputFile, prepared: _Prepared, inline_limit: int = -1) -> None:
        self._out = bytearray()
        self._inline_limit = inline_limit
        self.inline: tuple[bytes, bytes] | None = None  # (header, body) when kept instead of written
        self.output_file = _WrittenFile(output_file, self._out)
        self.file_schema = prepared.file_schema
        self.schema_name = SCHEMA_NAME
        self.sync_bytes = os.urandom(SYNC_SIZE)
        self.writer = prepared.writer
        self.metadata = prepared.meta
        self._header = prepared.header

    def __enter__(self) -> _PreparedAvroOutputFile:
        self.encoder = _BufferEncoder(self._out)
        self._write_header()
        return self

    def __exit__(
        self, exctype: type[BaseException] | None, excinst: BaseException | None, exctb: TracebackType | None
    ) -> None:
        if exctype is None:
            if len(self._out) - len(self._header) <= self._inline_limit:
                self.inline = (self._header, bytes(self._out[len(self._header) :]))
                return
            with self.output_file.create(overwrite=True) as stream:
                stream.write(bytes(self._out))

    def tell(self) -> int:
        return len(self._out)

    def _write_header(self) -> None:
        self._out += self._header
        self._out += self.sync_bytes

    def write_block(self, objects: list[ManifestEntry]) -> None:
        block = bytearray()
        block_encoder = _BufferEncoder(block)
        for obj in objects:
            self.writer.write(block_encoder, obj)
        self.encoder.write_int(len(objects))
        if codec := self.compression_codec():
            content, content_length = codec.compress(bytes(block))
            self.encoder.write_int(content_length)
            self.encoder.write(content)
        else:
            self.encoder.write_int(len(block))
            self.encoder.write(bytes(block))
        self.encoder.write(self.sync_bytes)


class _PreparedWriter(ManifestWriter):
    inline_limit = -1  # the largest body (bytes after the header) kept in memory instead of written

    @property
    def inline(self) -> tuple[bytes, bytes] | None:
        """Once closed: the manifest's (header, body) when it was small enough to be kept, not written."""
        writer = self._writer
        return writer.inline if isinstance(writer, _PreparedAvroOutputFile) else None

    def new_writer(self) -> AvroOutputFile[ManifestEntry]:
        key = (type(self), id(self._schema), id(self._spec), self._compression)
        with _lock:
            prepared = _prepared.get(key)
            if prepared is not None:
                _prepared.move_to_end(key)
        if prepared is None:
            file_schema = self._with_partition(self.version)
            schema_json = json.dumps(AvroSchemaConversion().iceberg_to_avro(file_schema, schema_name=SCHEMA_NAME))
            meta = self._meta
            prepared = _Prepared(
                self._schema,
                self._spec,
                file_schema,
                resolve_writer(record_schema=self._with_partition(DEFAULT_READ_VERSION), file_schema=file_schema),
                schema_json,
                meta,
                _encoded_header(meta, schema_json),
            )
            with _lock:
                _prepared[key] = prepared
                while len(_prepared) > CACHED:
                    _prepared.popitem(last=False)
        return _PreparedAvroOutputFile(self._output_file, prepared, self.inline_limit)


class _PreparedWriterV1(_PreparedWriter, ManifestWriterV1):
    pass


class _PreparedWriterV2(_PreparedWriter, ManifestWriterV2):
    pass


def write_manifest(
    format_version: int,
    spec: PartitionSpec,
    schema: Schema,
    output_file: OutputFile,
    snapshot_id: int,
    avro_compression: Any,
    inline_limit: int = -1,
) -> ManifestWriter:
    """pyiceberg.manifest.write_manifest, with the per-table parts of its writer made once. With
    ``inline_limit`` >= 0, a manifest whose bytes after the header are at most that many is not
    written: the writer's ``inline`` gives (header, body) instead (app/iceberg/inline_manifest.py)."""
    writer: _PreparedWriter
    if format_version == 1:
        writer = _PreparedWriterV1(spec, schema, output_file, snapshot_id, avro_compression)
    elif format_version == 2:
        writer = _PreparedWriterV2(spec, schema, output_file, snapshot_id, avro_compression)
    else:
        return pyiceberg_write_manifest(format_version, spec, schema, output_file, snapshot_id, avro_compression)  # type: ignore[arg-type]
    writer.inline_limit = inline_limit
    return writer
