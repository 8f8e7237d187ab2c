"""The JSON-serialisable description of one task's manifest: everything the commit needs."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pyiceberg.manifest import UNASSIGNED_SEQ, DataFile, ManifestContent, ManifestFile, PartitionFieldSummary
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema

from app.errors import InvalidArgument
from app.iceberg.inline_manifest import InlineManifest
from app.iceberg.schema_change import SchemaChange


def _b64(value: bytes | None) -> str | None:
    return base64.b64encode(value).decode("ascii") if value is not None else None


def _unb64(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value is not None else None


MAX_COUNT = 2**53  # counts are summed in Redis (int64) and in JSON numbers: keep far below overflow


def _int64(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise ValueError(f"{value!r} is not a 64-bit integer")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_COUNT:
        raise ValueError(f"{value!r} is not a count (an integer from 0 to 2^53)")
    return value


def _path(value: object) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError(f"{value!r} is not a file location")
    return value


def _bound(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"partition bound {value!r} is not base64 text")
    base64.b64decode(value, validate=True)
    return value


@dataclass(frozen=True)
class PartitionMetrics:
    """Added files, records and bytes in one partition (keyed by its path, '' when unpartitioned)."""

    files: int
    records: int
    bytes: int


def partition_metrics(spec: PartitionSpec, schema: Schema, data_files: Iterable[DataFile]) -> dict[str, PartitionMetrics]:
    """The files, records and bytes ``data_files`` add per partition path (empty when unpartitioned)."""
    metrics: dict[str, PartitionMetrics] = {}
    if spec.is_unpartitioned():
        return metrics
    for d in data_files:
        key = spec.partition_to_path(d.partition, schema)
        prev = metrics.get(key, PartitionMetrics(0, 0, 0))
        metrics[key] = PartitionMetrics(prev.files + 1, prev.records + d.record_count, prev.bytes + d.file_size_in_bytes)
    return metrics


@dataclass(frozen=True)
class ManifestDescriptor:
    task_id: str
    snapshot_id: int
    commit_uuid: str
    manifest_path: str
    manifest_length: int
    partition_spec_id: int
    added_files_count: int
    added_rows_count: int
    added_bytes: int
    partitions: list[dict[str, Any]]
    data_files: list[str]
    partition_metrics: dict[str, PartitionMetrics] = field(default_factory=dict)
    # the fields the task added and the columns it widened (schema mode evolve): the commit applies them
    schema_change: SchemaChange = field(default_factory=SchemaChange)
    # set when the manifest is kept in the job store, not in a file (app/iceberg/inline_manifest.py)
    inline: InlineManifest | None = None

    @classmethod
    def from_manifest(
        cls,
        task_id: str,
        commit_uuid: str,
        manifest: ManifestFile,
        data_files: list[str],
        added_bytes: int,
        partition_metrics: dict[str, PartitionMetrics],
        schema_change: SchemaChange | None = None,
        inline: InlineManifest | None = None,
    ) -> ManifestDescriptor:
        assert manifest.added_snapshot_id is not None
        return cls(
            task_id=task_id,
            snapshot_id=manifest.added_snapshot_id,
            commit_uuid=commit_uuid,
            manifest_path=manifest.manifest_path,
            manifest_length=manifest.manifest_length,
            partition_spec_id=manifest.partition_spec_id,
            added_files_count=manifest.added_files_count or 0,
            added_rows_count=manifest.added_rows_count or 0,
            added_bytes=added_bytes,
            partitions=[
                {
                    "contains_null": p.contains_null,
                    "contains_nan": p.contains_nan,
                    "lower_bound": _b64(p.lower_bound),
                    "upper_bound": _b64(p.upper_bound),
                }
                for p in manifest.partitions or []
            ],
            data_files=list(data_files),
            partition_metrics=dict(partition_metrics),
            schema_change=schema_change or SchemaChange(),
            inline=inline,
        )

    def with_header_from(self, headers: Mapping[str, bytes]) -> ManifestDescriptor:
        """An inline manifest's description with its header, found by digest among the job's stored
        headers (checked against their digests); unchanged when not inline or not found (the commit
        then refuses it)."""
        header = headers.get(self.inline.digest) if self.inline is not None else None
        if self.inline is None or header is None:
            return self
        return replace(self, inline=InlineManifest(self.inline.digest, self.inline.body, header))

    def to_manifest_file(self) -> ManifestFile:
        """A fresh ManifestFile: pyiceberg's manifest-list writer mutates the one it is given."""
        return ManifestFile.from_args(
            manifest_path=self.manifest_path,
            manifest_length=self.manifest_length,
            partition_spec_id=self.partition_spec_id,
            content=ManifestContent.DATA,
            sequence_number=UNASSIGNED_SEQ,
            min_sequence_number=UNASSIGNED_SEQ,
            added_snapshot_id=self.snapshot_id,
            added_files_count=self.added_files_count,
            existing_files_count=0,
            deleted_files_count=0,
            added_rows_count=self.added_rows_count,
            existing_rows_count=0,
            deleted_rows_count=0,
            partitions=[
                PartitionFieldSummary.from_args(
                    contains_null=p["contains_null"],
                    contains_nan=p["contains_nan"],
                    lower_bound=_unb64(p["lower_bound"]),
                    upper_bound=_unb64(p["upper_bound"]),
                )
                for p in self.partitions
            ],
            key_metadata=None,
        )

    def to_dict(self) -> dict[str, Any]:
        # what dataclasses.asdict gives, built directly (it deep-copies field by field: measurable per task)
        return {
            "task_id": self.task_id,
            "snapshot_id": self.snapshot_id,
            "commit_uuid": self.commit_uuid,
            "manifest_path": self.manifest_path,
            "manifest_length": self.manifest_length,
            "partition_spec_id": self.partition_spec_id,
            "added_files_count": self.added_files_count,
            "added_rows_count": self.added_rows_count,
            "added_bytes": self.added_bytes,
            "partitions": [dict(p) for p in self.partitions],
            "data_files": list(self.data_files),
            "partition_metrics": {
                k: {"files": m.files, "records": m.records, "bytes": m.bytes} for k, m in self.partition_metrics.items()
            },
            "schema_change": self.schema_change.to_dict(),
            **({"inline": self.inline.to_dict()} if self.inline is not None else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestDescriptor:
        try:
            metrics = {
                str(k): PartitionMetrics(_count(v["files"]), _count(v["records"]), _count(v["bytes"]))
                for k, v in (data.get("partition_metrics") or {}).items()
            }
            return cls(
                task_id=str(data["task_id"]),
                snapshot_id=_int64(data["snapshot_id"]),
                commit_uuid=str(data["commit_uuid"]),
                manifest_path=_path(data["manifest_path"]),
                manifest_length=_count(data["manifest_length"]),
                partition_spec_id=_count(data["partition_spec_id"]),
                added_files_count=_count(data["added_files_count"]),
                added_rows_count=_count(data["added_rows_count"]),
                added_bytes=_count(data["added_bytes"]),
                partitions=[
                    {
                        "contains_null": bool(p["contains_null"]),
                        "contains_nan": None if p.get("contains_nan") is None else bool(p["contains_nan"]),
                        "lower_bound": _bound(p.get("lower_bound")),
                        "upper_bound": _bound(p.get("upper_bound")),
                    }
                    for p in data["partitions"]
                ],
                data_files=[_path(p) for p in data["data_files"]],
                partition_metrics=metrics,
                schema_change=SchemaChange.from_dict(data.get("schema_change")),
                inline=InlineManifest.from_dict(data["inline"]) if data.get("inline") is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise InvalidArgument(f"not a valid manifest description: missing or wrong field {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> ManifestDescriptor:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"not a valid manifest description: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidArgument("not a valid manifest description: expected a JSON object")
        return cls.from_dict(data)
