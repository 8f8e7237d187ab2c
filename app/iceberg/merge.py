"""Merging small manifests at commit time: on by default, as Apache Iceberg's Java writers do (a table
opts out with ``commit.manifest-merge.enabled=false``), so the tables a job leaves stay cheap to plan.

First the job's own task manifests are joined (concatenated, see :mod:`manifest_concat`) into one
manifest per partition spec, rolling at ``commit.manifest.target-size-bytes``: what one Java append of
the same files writes, so a job of many tasks leaves no more manifests than one append would. Then
it follows Iceberg's MergeAppend (and pyiceberg's _ManifestMergeManager): manifests of one partition
spec are bin-packed to ``commit.manifest.target-size-bytes``; the bin holding the job's first new
manifest is merged only when it has at least ``commit.manifest.min-count-to-merge`` manifests. Entries
of this snapshot stay ADDED with an unassigned sequence number (inherited at commit); entries of
older snapshots become EXISTING and keep their own sequence numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyiceberg.io import FileIO
from pyiceberg.manifest import ManifestContent, ManifestEntryStatus, ManifestFile, write_manifest
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.utils.bin_packing import ListPacker

from app.iceberg.manifest_concat import NotConcatenable, concat_manifests, concatenable
from app.iceberg.manifest_reader import read_entries
from app.values import bool_property, int_property

MERGE_ENABLED = "commit.manifest-merge.enabled"
MIN_COUNT_TO_MERGE = "commit.manifest.min-count-to-merge"
TARGET_SIZE_BYTES = "commit.manifest.target-size-bytes"


@dataclass(frozen=True)
class MergePolicy:
    enabled: bool
    min_count: int
    target_size_bytes: int

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> MergePolicy:
        return cls(
            enabled=bool_property(props, MERGE_ENABLED, True),
            min_count=int_property(props, MIN_COUNT_TO_MERGE, 100),
            target_size_bytes=int_property(props, TARGET_SIZE_BYTES, 8 * 1024 * 1024),
        )


@dataclass
class MergeResult:
    manifests: list[ManifestFile]
    written: list[str] = field(default_factory=list)


def merge_manifests(
    table: Table,
    io: FileIO,
    snapshot_id: int,
    new: list[ManifestFile],
    existing: list[ManifestFile],
    policy: MergePolicy,
    name_prefix: str,
    schema: Schema | None = None,
) -> MergeResult:
    """Return the manifests for the new manifest list, merging bins as the policy says (merged
    manifests are written with ``schema``, by default the table's)."""
    schema = schema or table.metadata.schema()
    if not policy.enabled or not new:
        return MergeResult(new + existing)
    result = MergeResult([])
    new = _join_new(table, io, snapshot_id, new, policy, name_prefix, schema, result)
    all_manifests = new + existing
    data = [m for m in all_manifests if m.content == ManifestContent.DATA]
    deletes = [m for m in all_manifests if m.content != ManifestContent.DATA]
    first = new[0]
    groups: dict[int, list[ManifestFile]] = defaultdict(list)
    for manifest in data:
        groups[manifest.partition_spec_id].append(manifest)
    for spec_id in reversed(list(groups)):
        packer: ListPacker[ManifestFile] = ListPacker(
            target_weight=policy.target_size_bytes, lookback=1, largest_bin_first=False
        )
        for manifest_bin in packer.pack_end(groups[spec_id], lambda m: m.manifest_length):
            if len(manifest_bin) == 1 or (first in manifest_bin and len(manifest_bin) < policy.min_count):
                result.manifests.extend(manifest_bin)
                continue
            path = table.location_provider().new_metadata_location(
                f"{name_prefix}-{len(result.written)}.avro"
            )
            result.manifests.append(_merge_bin(table, io, snapshot_id, spec_id, manifest_bin, path, schema))
            result.written.append(path)
    result.manifests.extend(deletes)
    return result


def _join_new(
    table: Table,
    io: FileIO,
    snapshot_id: int,
    new: list[ManifestFile],
    policy: MergePolicy,
    name_prefix: str,
    schema: Schema,
    result: MergeResult,
) -> list[ManifestFile]:
    """The job's new manifests joined into one per spec (rolling at the target size); what it wrote
    is added to ``result.written``."""
    groups: dict[int, list[ManifestFile]] = defaultdict(list)
    others: list[ManifestFile] = []
    for manifest in new:
        if manifest.content == ManifestContent.DATA:
            groups[manifest.partition_spec_id].append(manifest)
        else:
            others.append(manifest)
    joined: list[ManifestFile] = []
    for spec_id, manifests in groups.items():
        packer: ListPacker[ManifestFile] = ListPacker(
            target_weight=policy.target_size_bytes, lookback=1, largest_bin_first=False
        )
        for manifest_bin in packer.pack(manifests, lambda m: m.manifest_length):
            if len(manifest_bin) == 1:
                joined.extend(manifest_bin)
                continue
            path = table.location_provider().new_metadata_location(f"{name_prefix}-{len(result.written)}.avro")
            joined.append(_merge_bin(table, io, snapshot_id, spec_id, manifest_bin, path, schema))
            result.written.append(path)
    return joined + others


def _merge_bin(
    table: Table,
    io: FileIO,
    snapshot_id: int,
    spec_id: int,
    manifests: list[ManifestFile],
    path: str,
    schema: Schema,
) -> ManifestFile:
    if concatenable(manifests, snapshot_id):
        try:
            return concat_manifests(io, manifests, path, table.metadata.specs()[spec_id], schema)
        except NotConcatenable:
            pass
    return _write_merged(table, io, snapshot_id, spec_id, manifests, path, schema)


def _write_merged(
    table: Table,
    io: FileIO,
    snapshot_id: int,
    spec_id: int,
    manifests: list[ManifestFile],
    path: str,
    schema: Schema,
) -> ManifestFile:
    metadata = table.metadata
    writer = write_manifest(
        format_version=metadata.format_version,  # type: ignore[arg-type]
        spec=metadata.specs()[spec_id],
        schema=schema,
        output_file=io.new_output(path),
        snapshot_id=snapshot_id,
        avro_compression=metadata.properties.get("write.avro.compression-codec", "gzip"),  # type: ignore[arg-type]
    )
    with writer:
        for manifest in manifests:
            for entry in read_entries(manifest, io, discard_deleted=False):
                if entry.status == ManifestEntryStatus.DELETED:
                    if entry.snapshot_id == snapshot_id:
                        writer.delete(entry)
                elif entry.status == ManifestEntryStatus.ADDED and entry.snapshot_id == snapshot_id:
                    writer.add(entry)
                else:
                    writer.existing(entry)
    return writer.to_manifest_file()
