"""Rewriting a job's data files whose field ids the commit had to change (schema mode evolve).

Readers match a Parquet column to the table by the field id the file carries, so when the commit
merges one of the job's new columns into a column of the same name another writer added while the job
ran (or moves it off an id taken meanwhile: :mod:`app.iceberg.schema_merge`), every data file carrying
the old id is rewritten with the new one: row group by row group, the same values, codec, row groups
and dictionary columns, only the ``PARQUET:field_id`` of the remapped fields changes. The copy is
written next to the original as ``<name>-remapped.parquet`` (deterministic, so a retried commit
overwrites rather than piles up and a failed job's cleanup can find it), its statistics computed
afresh against the schema being committed; the task manifests holding such files are rewritten as
``<name>-remapped.avro`` with the copies, and committed instead of the originals.

Only manifests whose task added a remapped field are read (their schema change names the ids their
files carry); the cost is one read and one write of those files, at commit, once per attempt that
needs it. The originals are deleted once the job is complete (:func:`replaced_files` finds them
again for a commit found already landed); an attempt the catalog refuses deletes its copies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import wait
from dataclasses import dataclass, field
from typing import IO, Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    pyarrow_to_schema,
)
from pyiceberg.manifest import DataFile, ManifestEntry, ManifestEntryStatus, write_manifest
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.utils.concurrent import ExecutorFactory

from app.iceberg.descriptor import ManifestDescriptor, partition_metrics
from app.iceberg.files import delete_quietly
from app.iceberg.manifest_reader import read_entries
from app.iceberg.schema_change import index_fields

log = logging.getLogger(__name__)

SUFFIX = "-remapped"
FIELD_ID = b"PARQUET:field_id"


def remapped_path(path: str) -> str:
    """Where the rewritten copy of ``path`` goes: ``a/b.parquet`` -> ``a/b-remapped.parquet``."""
    head, sep, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    return f"{head}{sep}{stem}{SUFFIX}.{ext}" if dot else f"{path}{SUFFIX}"


def may_carry(manifest: ManifestDescriptor, remap: Mapping[int, int] | None = None) -> bool:
    """Whether ``manifest``'s data files may carry an id of ``remap`` (any new id when None)."""
    return any(remap is None or f.field_id in remap for f in manifest.schema_change.added)


@dataclass
class Rewrite:
    manifests: list[ManifestDescriptor]  # the job's manifests, those rewritten replaced by their copies
    written: list[str] = field(default_factory=list)  # every file this rewrite wrote (or began)
    replaced: list[str] = field(default_factory=list)  # original data files replaced by copies


def rewrite_remapped(
    table: Table,
    snapshot_id: int,
    manifests: list[ManifestDescriptor],
    remap: Mapping[int, int],
    schema: Schema,
    reads: FileIO | None = None,
) -> Rewrite:
    """Rewrite the data files (and their manifests) carrying an id of ``remap``, for ``schema``; the
    job's manifests are read through ``reads`` (by default the table's io)."""
    out = Rewrite(list(manifests))
    try:
        for i, m in enumerate(manifests):
            if may_carry(m, remap):
                out.manifests[i] = _rewrite_manifest(table, snapshot_id, m, remap, schema, out, reads or table.io)
    except BaseException:
        delete_quietly(table.io, out.written)
        raise
    return out


def _rewrite_manifest(
    table: Table,
    snapshot_id: int,
    m: ManifestDescriptor,
    remap: Mapping[int, int],
    schema: Schema,
    out: Rewrite,
    reads: FileIO,
) -> ManifestDescriptor:
    io, metadata = table.io, table.metadata
    originals = [e.data_file for e in read_entries(m.to_manifest_file(), reads)]
    executor = ExecutorFactory.get_or_create()
    futures = [
        executor.submit(_rewrite_file, io, d, remap, schema, metadata.properties, out) for d in originals
    ]
    wait(futures)
    files = [f.result() for f in futures]  # the first failure raises (the caller deletes what was written)
    out.replaced += [d.file_path for d, new in zip(originals, files, strict=True) if new is not d]
    spec = metadata.specs()[m.partition_spec_id]
    path = remapped_path(m.manifest_path)
    out.written.append(path)
    with write_manifest(
        format_version=metadata.format_version,  # type: ignore[arg-type]
        spec=spec,
        schema=schema,
        output_file=io.new_output(path),
        snapshot_id=snapshot_id,
        avro_compression=metadata.properties.get("write.avro.compression-codec", "gzip"),  # type: ignore[arg-type]
    ) as writer:
        for d in files:
            writer.add(
                ManifestEntry.from_args(
                    status=ManifestEntryStatus.ADDED,
                    snapshot_id=snapshot_id,
                    sequence_number=None,
                    file_sequence_number=None,
                    data_file=d,
                )
            )
    metrics = partition_metrics(spec, schema, files)
    return ManifestDescriptor.from_manifest(
        task_id=m.task_id,
        commit_uuid=m.commit_uuid,
        manifest=writer.to_manifest_file(),
        data_files=[d.file_path for d in files],
        added_bytes=sum(d.file_size_in_bytes for d in files),
        partition_metrics=metrics,
        schema_change=m.schema_change,
    )


def _remap_field(f: pa.Field, remap: Mapping[int, int], seen: set[int]) -> pa.Field:
    t = f.type
    if pa.types.is_struct(t):
        t = pa.struct([_remap_field(t.field(i), remap, seen) for i in range(t.num_fields)])
    elif pa.types.is_large_list(t):
        t = pa.large_list(_remap_field(t.value_field, remap, seen))
    elif pa.types.is_list(t):
        t = pa.list_(_remap_field(t.value_field, remap, seen))
    elif pa.types.is_map(t):
        key, item = _remap_field(t.key_field, remap, seen), _remap_field(t.item_field, remap, seen)
        t = pa.map_(key, item, keys_sorted=t.keys_sorted)
    meta = dict(f.metadata or {})
    if FIELD_ID in meta:
        field_id = int(meta[FIELD_ID])
        seen.add(field_id)
        if field_id in remap:
            meta[FIELD_ID] = str(remap[field_id]).encode()
    return pa.field(f.name, t, f.nullable, meta or None)


def _writer_options(properties: Mapping[str, str]) -> dict[str, Any]:
    """The Parquet settings the table asks for (as pyiceberg's and Floe's writers read them)."""
    codec = properties.get(TableProperties.PARQUET_COMPRESSION, TableProperties.PARQUET_COMPRESSION_DEFAULT)
    level = properties.get(TableProperties.PARQUET_COMPRESSION_LEVEL)
    return {
        "compression": "none" if codec == "uncompressed" else codec,
        "compression_level": int(level) if level else None,
        "data_page_size": int(properties.get(TableProperties.PARQUET_PAGE_SIZE_BYTES, 1024 * 1024)),
        "dictionary_pagesize_limit": int(properties.get(TableProperties.PARQUET_DICT_SIZE_BYTES, 2 * 1024 * 1024)),
        "write_batch_size": int(properties.get(TableProperties.PARQUET_PAGE_ROW_LIMIT, 20000)),
    }


def _rewrite_file(
    io: FileIO, d: DataFile, remap: Mapping[int, int], schema: Schema, properties: dict[str, str], out: Rewrite
) -> DataFile:
    """``d`` rewritten with the remapped ids (``d`` itself when it carries none of them)."""
    with io.new_input(d.file_path).open() as stream:
        source = pq.ParquetFile(cast(IO[Any], stream))
        seen: set[int] = set()
        old = source.schema_arrow
        new = pa.schema([_remap_field(f, remap, seen) for f in old], metadata=old.metadata)
        if not seen & remap.keys():
            return d
        meta = source.metadata
        first = meta.row_group(0) if meta.num_row_groups else None
        dictionary = [
            first.column(i).path_in_schema for i in range(first.num_columns) if first.column(i).has_dictionary_page
        ] if first is not None else []  # fmt: skip
        path = remapped_path(d.file_path)
        out.written.append(path)
        with io.new_output(path).create(overwrite=True) as sink:
            writer = pq.ParquetWriter(
                cast(IO[Any], sink),
                schema=new,
                store_decimal_as_integer=True,
                use_dictionary=dictionary,
                **_writer_options(properties),
            )
            for i in range(meta.num_row_groups):
                group = source.read_row_group(i)
                writer.write_table(pa.Table.from_arrays(group.columns, schema=new), row_group_size=max(1, group.num_rows))
            writer.close()
    stats = data_file_statistics_from_parquet_metadata(
        parquet_metadata=writer.writer.metadata,
        stats_columns=compute_statistics_plan(schema, properties),
        parquet_column_mapping=parquet_path_to_id_mapping(pyarrow_to_schema(new)),
    )
    return DataFile.from_args(
        content=d.content,
        file_path=path,
        file_format=d.file_format,
        partition=d.partition,
        file_size_in_bytes=len(io.new_input(path)),
        sort_order_id=d.sort_order_id,
        spec_id=d.spec_id,
        equality_ids=d.equality_ids,
        key_metadata=d.key_metadata,
        **stats.to_serialized_dict(),
    )


def replaced_files(table: Table, committed: Snapshot, manifests: list[ManifestDescriptor]) -> list[str]:
    """For a commit found landed: the job's original data files it replaced by rewritten copies, and the
    copies (data files, manifests) it does not reference; none when it remapped no id."""
    added = [f for m in manifests for f in m.schema_change.added]
    if not added:
        return []
    schema = table.metadata.schema_by_id(committed.schema_id) if committed.schema_id is not None else None
    if schema is not None:
        held = index_fields(schema)
        if all((h := held.get(f.field_id)) and (h[0], h[1].name) == (f.parent_id, f.name) for f in added):
            return []  # every new field has its reserved id: nothing was rewritten
    io = table.io
    try:
        listed = list(committed.manifests(io))
        data = {
            e.data_file.file_path
            for m in listed
            if m.added_snapshot_id == committed.snapshot_id
            for e in read_entries(m, io)
        }
    except Exception:  # noqa: BLE001 - cleanup is best effort; an unreadable snapshot means keep everything
        log.warning("cannot read the manifests of snapshot %s; keeping the job's files", committed.snapshot_id)
        return []
    listed_paths = {m.manifest_path for m in listed}
    out = []
    for m in manifests:
        if not may_carry(m):
            continue
        for p in m.data_files:
            copy = remapped_path(p)
            if copy in data and p not in data:
                out.append(p)
            elif p in data and copy not in data:
                out.append(copy)  # a copy an attempt began (mostly absent: deleted quietly)
        if remapped_path(m.manifest_path) not in listed_paths:
            out.append(remapped_path(m.manifest_path))
    return sorted(out)
