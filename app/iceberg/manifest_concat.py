"""Merging a job's own task manifests without decoding their entries.

Every task manifest of a job is an Avro file with the same schema whose entries are exactly what
the merged manifest must hold (ADDED, this snapshot's id, sequence numbers unassigned). So merging
them is concatenating their Avro data blocks under one header: each block is decompressed and the
entries are re-packed into a few large blocks, which also makes the result faster to read than one
block per entry. The merged ManifestFile's counts and partition summaries are combined from the
inputs' (lower bounds the smallest, upper bounds the largest, by the partition field's type).

Profiled before this existed: decoding and re-encoding entries cost ~0.8 ms per task manifest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pyiceberg.avro.codecs import KNOWN_CODECS, Codec
from pyiceberg.avro.decoder import new_decoder
from pyiceberg.avro.encoder import BinaryEncoder
from pyiceberg.avro.file import _SCHEMA_KEY, AVRO_CODEC_KEY, MAGIC, META_SCHEMA, SYNC_SIZE, AvroFileHeader
from pyiceberg.avro.reader import Reader
from pyiceberg.avro.resolver import construct_reader
from pyiceberg.avro.writer import Writer
from pyiceberg.conversions import from_bytes, to_bytes
from pyiceberg.io import FileIO
from pyiceberg.manifest import UNASSIGNED_SEQ, ManifestContent, ManifestFile, PartitionFieldSummary
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.types import PrimitiveType

BLOCK_BYTES = 1 << 20
_header_reader: Reader | None = None
_header_writer: Writer | None = None


class NotConcatenable(Exception):
    """The manifests differ in schema or codec, or are not all unstamped manifests of this snapshot."""


def concatenable(manifests: Sequence[ManifestFile], snapshot_id: int) -> bool:
    return (
        all(
            m.added_snapshot_id == snapshot_id
            and m.sequence_number == UNASSIGNED_SEQ
            and m.content == ManifestContent.DATA
            and not m.existing_files_count
            and not m.deleted_files_count
            for m in manifests
        )
        and len({m.partition_spec_id for m in manifests}) == 1
    )


def _read_blocks(data: bytes) -> tuple[dict[str, str], list[tuple[int, bytes]]]:
    global _header_reader
    if _header_reader is None:
        _header_reader = construct_reader(META_SCHEMA, {-1: AvroFileHeader})
    decoder = new_decoder(data)
    header: AvroFileHeader = _header_reader.read(decoder)
    blocks = []
    while True:
        try:
            count = decoder.read_int()
        except EOFError:
            break
        payload = decoder.read_bytes()
        if decoder.read(SYNC_SIZE) != header.sync:
            raise NotConcatenable("sync marker mismatch")
        blocks.append((count, payload))
    return header.meta, blocks


def concat_manifests(
    io: FileIO, manifests: Sequence[ManifestFile], path: str, spec: PartitionSpec, schema: Schema
) -> ManifestFile:
    """Write ``manifests`` (unstamped manifests of one snapshot, one spec) as one manifest at ``path``."""
    global _header_writer
    meta: dict[str, str] | None = None
    entries: list[tuple[int, bytes]] = []
    for manifest in manifests:
        with io.new_input(manifest.manifest_path).open() as f:
            file_meta, blocks = _read_blocks(f.read())
        if meta is None:
            meta = dict(file_meta)
        elif file_meta.get(_SCHEMA_KEY) != meta.get(_SCHEMA_KEY) or file_meta.get(AVRO_CODEC_KEY) != meta.get(
            AVRO_CODEC_KEY
        ):
            raise NotConcatenable(f"{manifest.manifest_path} has another schema or codec")
        codec = _codec(meta)
        entries += [(count, codec.decompress(payload) if codec else payload) for count, payload in blocks]
    assert meta is not None
    codec = _codec(meta)
    if _header_writer is None:
        from pyiceberg.avro.resolver import construct_writer

        _header_writer = construct_writer(META_SCHEMA)
    sync = os.urandom(SYNC_SIZE)
    output = io.new_output(path)
    with output.create(overwrite=True) as stream:
        encoder = BinaryEncoder(stream)
        _header_writer.write(encoder, AvroFileHeader(MAGIC, meta, sync))
        for count, raw in _pack(entries):
            payload = codec.compress(raw)[0] if codec else raw
            encoder.write_int(count)
            encoder.write_int(len(payload))
            encoder.write(payload)
            encoder.write(sync)
    return ManifestFile.from_args(
        manifest_path=path,
        manifest_length=len(io.new_input(path)),
        partition_spec_id=manifests[0].partition_spec_id,
        content=ManifestContent.DATA,
        sequence_number=UNASSIGNED_SEQ,
        min_sequence_number=UNASSIGNED_SEQ,
        added_snapshot_id=manifests[0].added_snapshot_id,
        added_files_count=sum(m.added_files_count or 0 for m in manifests),
        existing_files_count=0,
        deleted_files_count=0,
        added_rows_count=sum(m.added_rows_count or 0 for m in manifests),
        existing_rows_count=0,
        deleted_rows_count=0,
        partitions=merge_partition_summaries(manifests, spec, schema),
        key_metadata=None,
    )


def _codec(meta: dict[str, str]) -> type[Codec] | None:
    name = meta.get(AVRO_CODEC_KEY, "null")
    if name not in KNOWN_CODECS:
        raise NotConcatenable(f"unknown Avro codec {name!r}")
    return KNOWN_CODECS[name]  # type: ignore[index]


def _pack(entries: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    count, parts, size = 0, [], 0
    for n, raw in entries:
        count, size = count + n, size + len(raw)
        parts.append(raw)
        if size >= BLOCK_BYTES:
            out.append((count, b"".join(parts)))
            count, parts, size = 0, [], 0
    if count:
        out.append((count, b"".join(parts)))
    return out


def merge_partition_summaries(
    manifests: Sequence[ManifestFile], spec: PartitionSpec, schema: Schema
) -> list[PartitionFieldSummary]:
    fields = spec.partition_type(schema).fields
    merged = []
    for i, field in enumerate(fields):
        summaries = [m.partitions[i] for m in manifests if m.partitions and len(m.partitions) > i]
        ftype = field.field_type
        assert isinstance(ftype, PrimitiveType)
        lowers = [from_bytes(ftype, s.lower_bound) for s in summaries if s.lower_bound is not None]
        uppers = [from_bytes(ftype, s.upper_bound) for s in summaries if s.upper_bound is not None]
        nans = [s.contains_nan for s in summaries if s.contains_nan is not None]
        merged.append(
            PartitionFieldSummary.from_args(
                contains_null=any(s.contains_null for s in summaries),
                contains_nan=any(nans) if nans else None,
                lower_bound=to_bytes(ftype, min(lowers)) if lowers else None,  # type: ignore[type-var]
                upper_bound=to_bytes(ftype, max(uppers)) if uppers else None,  # type: ignore[type-var]
            )
        )
    return merged
