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
    bins = _Bins(table, io, snapshot_id, name_prefix, schema, result.written)
    new = _join_new(new, policy, bins)
    all_manifests = new + existing
    data = [m for m in all_manifests if m.content == ManifestContent.DATA]
    deletes = [m for m in all_manifests if m.content != ManifestContent.DATA]
    first = new[0]
    groups: dict[int, list[ManifestFile]] = defaultdict(list)
    for manifest in data:
        groups[manifest.partition_spec_id].append(manifest)
    for spec_id in reversed(list(groups)):
        for manifest_bin in _packer(policy).pack_end(groups[spec_id], lambda m: m.manifest_length):
            if len(manifest_bin) == 1 or (first in manifest_bin and len(manifest_bin) < policy.min_count):
                result.manifests.extend(manifest_bin)
            else:
                result.manifests.append(bins.merge(spec_id, manifest_bin))
    result.manifests.extend(deletes)
    return result


@dataclass
class _Bins:
    """Writes merged manifests named ``<name_prefix>-<n>.avro``, listing each in ``written``."""

    table: Table
    io: FileIO
    snapshot_id: int
    name_prefix: str
    schema: Schema
    written: list[str]

    def merge(self, spec_id: int, manifests: list[ManifestFile]) -> ManifestFile:
        path = self.table.location_provider().new_metadata_location(f"{self.name_prefix}-{len(self.written)}.avro")
        self.written.append(path)  # listed before it is written: an attempt that fails deletes it
        return _merge_bin(self.table, self.io, self.snapshot_id, spec_id, manifests, path, self.schema)


def _packer(policy: MergePolicy) -> ListPacker[ManifestFile]:
    return ListPacker(target_weight=policy.target_size_bytes, lookback=1, largest_bin_first=False)


def _join_new(new: list[ManifestFile], policy: MergePolicy, bins: _Bins) -> list[ManifestFile]:
    """The job's new manifests joined into one per spec (rolling at the target size)."""
    groups: dict[int, list[ManifestFile]] = defaultdict(list)
    others: list[ManifestFile] = []
    for manifest in new:
        if manifest.content == ManifestContent.DATA:
            groups[manifest.partition_spec_id].append(manifest)
        else:
            others.append(manifest)
    joined: list[ManifestFile] = []
    for spec_id, manifests in groups.items():
        for manifest_bin in _packer(policy).pack(manifests, lambda m: m.manifest_length):
            joined.append(manifest_bin[0] if len(manifest_bin) == 1 else bins.merge(spec_id, manifest_bin))
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
