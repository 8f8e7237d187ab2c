"""Reserving a distributed snapshot: the id, commit uuid and table state every host writes against."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from pyiceberg.table import Table

from app.errors import InvalidArgument, UnsupportedTable

WRITABLE_FORMAT_VERSIONS = (1, 2)


def check_writable(table: Table) -> None:
    """Refuse a table pyiceberg 0.12 cannot write manifests for, before any file is written."""
    version = table.metadata.format_version
    if version not in WRITABLE_FORMAT_VERSIONS:
        raise UnsupportedTable(
            f"table {'.'.join(table.name())} has format version {version}; Floe (pyiceberg 0.12) writes "
            f"manifests for format versions 1 and 2 only"
        )


@dataclass(frozen=True)
class DistributedSnapshot:
    """What a reservation pins: every manifest of the job is tagged with ``snapshot_id``."""

    snapshot_id: int
    commit_uuid: str
    parent_snapshot_id: int | None
    table_uuid: str
    table_identifier: tuple[str, ...]
    metadata_location: str
    format_version: int
    schema_id: int
    spec_id: int
    properties: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["table_identifier"] = list(self.table_identifier)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistributedSnapshot:
        try:
            parent = data["parent_snapshot_id"]
            return cls(
                snapshot_id=int(data["snapshot_id"]),
                commit_uuid=str(uuid.UUID(str(data["commit_uuid"]))),
                parent_snapshot_id=int(parent) if parent is not None else None,
                table_uuid=str(data["table_uuid"]),
                table_identifier=tuple(str(p) for p in data["table_identifier"]),
                metadata_location=str(data["metadata_location"]),
                format_version=int(data["format_version"]),
                schema_id=int(data["schema_id"]),
                spec_id=int(data["spec_id"]),
                properties={str(k): str(v) for k, v in (data.get("properties") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"not a valid distributed snapshot description: {exc!r}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DistributedSnapshot:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"not a valid distributed snapshot description: {exc}") from None


def begin_distributed_snapshot(table: Table, properties: dict[str, str] | None = None) -> DistributedSnapshot:
    """Reserve a snapshot id and a commit uuid against main's current head."""
    check_writable(table)
    for key, value in (properties or {}).items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise InvalidArgument(
                f"snapshot property {key!r}={value!r} must be a non-empty string key and a string"
            )
    metadata = table.metadata
    head = metadata.current_snapshot()
    return DistributedSnapshot(
        snapshot_id=metadata.new_snapshot_id(),
        commit_uuid=str(uuid.uuid4()),
        parent_snapshot_id=head.snapshot_id if head is not None else None,
        table_uuid=str(metadata.table_uuid),
        table_identifier=tuple(table.name()),
        metadata_location=table.metadata_location,
        format_version=metadata.format_version,
        schema_id=metadata.current_schema_id,
        spec_id=metadata.default_spec_id,
        properties=dict(properties or {}),
    )
