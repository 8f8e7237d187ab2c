"""The snapshot summary of a distributed commit: worker metrics summed, totals carried from the parent."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pyiceberg.table.snapshots import Operation, Snapshot, Summary, update_snapshot_summaries

from app.errors import InvalidArgument
from app.iceberg.descriptor import ManifestDescriptor, PartitionMetrics

PARTITION_SUMMARY_LIMIT = "write.summary.partition-limit"
JOB_ID_KEY = "floe.job-id"
COMMIT_UUID_KEY = "floe.commit-uuid"
RESERVED_PREFIXES = ("added-", "deleted-", "removed-", "total-", "changed-partition", "partition")


def check_extra_properties(extra: Mapping[str, str]) -> None:
    for key, value in extra.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise InvalidArgument(f"summary property {key!r}={value!r}: keys and values must be strings")
        if key == "operation" or key.startswith(RESERVED_PREFIXES) or key == COMMIT_UUID_KEY:
            raise InvalidArgument(f"summary property {key!r} is reserved: Iceberg or Floe computes it")


def _merge_partition_metrics(manifests: Iterable[ManifestDescriptor]) -> dict[str, PartitionMetrics]:
    merged: dict[str, PartitionMetrics] = {}
    for manifest in manifests:
        for path, m in manifest.partition_metrics.items():
            prev = merged.get(path, PartitionMetrics(0, 0, 0))
            merged[path] = PartitionMetrics(
                prev.files + m.files, prev.records + m.records, prev.bytes + m.bytes
            )
    return merged


def _metrics_props(files: int, records: int, size: int) -> dict[str, str]:
    # Same keys and order as pyiceberg's UpdateMetrics.to_dict (set only when positive).
    props: dict[str, str] = {}
    if size > 0:
        props["added-files-size"] = str(size)
    if files > 0:
        props["added-data-files"] = str(files)
    if records > 0:
        props["added-records"] = str(records)
    return props


def build_summary(
    manifests: list[ManifestDescriptor],
    parent: Snapshot | None,
    table_properties: Mapping[str, str],
    extra: Mapping[str, str],
) -> Summary:
    props = _metrics_props(
        sum(m.added_files_count for m in manifests),
        sum(m.added_rows_count for m in manifests),
        sum(m.added_bytes for m in manifests),
    )
    partitions = _merge_partition_metrics(manifests)
    if partitions:
        props["changed-partition-count"] = str(len(partitions))
    try:
        limit = int(table_properties.get(PARTITION_SUMMARY_LIMIT, "0"))
    except ValueError:
        raise InvalidArgument(
            f"table property {PARTITION_SUMMARY_LIMIT}={table_properties[PARTITION_SUMMARY_LIMIT]!r} "
            "is not an integer"
        ) from None
    if partitions and len(partitions) <= limit:
        props["partition-summaries-included"] = "true"
        for path, m in sorted(partitions.items()):
            props[f"partitions.{path}"] = ",".join(
                f"{k}={v}" for k, v in _metrics_props(m.files, m.records, m.bytes).items()
            )
    props.update(extra)
    return update_snapshot_summaries(
        summary=Summary(operation=Operation.APPEND, **props),
        previous_summary=parent.summary if parent is not None else None,
    )
