"""What a reported manifest must be before it is recorded: checks against the table and the reservation.

A worker (or any gRPC client) reports a manifest by its description. Only a readable manifest of this
job's reservation that lists exactly the files its description names, all inside the table's location,
may be recorded: the coordinator later commits the winner's manifest and may delete a loser's files.
"""

from __future__ import annotations

from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.table import Table

from app.errors import InvalidArgument
from app.iceberg import ManifestDescriptor
from app.iceberg.manifest_reader import read_entries
from app.iceberg.schema_evolution import ReservedField, SchemaMode


def check_reported_manifest(table: Table, descriptor: ManifestDescriptor) -> None:
    """A description may only name files inside the table's location, and its manifest must be a
    manifest of this reservation: named for its commit uuid (as workers write them) and holding
    only entries ADDED by the reserved snapshot. The coordinator commits a winner's manifest."""
    if descriptor.inline is not None:
        raise InvalidArgument(
            f"manifest {descriptor.manifest_path} is described as kept in the job store (inline); a reported "
            "manifest must be a file the coordinator can read: leave out 'inline' and write the file"
        )
    root = table.location().rstrip("/") + "/"
    for path in (descriptor.manifest_path, *descriptor.data_files):
        if not path.startswith(root) or "/.." in path[len(root) - 1 :] or path.endswith("/"):
            raise InvalidArgument(f"manifest description names {path}, outside the table's location {root}")
    name = descriptor.manifest_path.rsplit("/", 1)[-1]
    if not (name.startswith(f"{descriptor.commit_uuid}-") and name.endswith(".avro")):
        raise InvalidArgument(
            f"manifest {descriptor.manifest_path} is not named for commit {descriptor.commit_uuid}"
        )
    try:
        entries = read_entries(descriptor.to_manifest_file(), table.io)
    except Exception as exc:  # noqa: BLE001 - unreadable or not an Avro manifest: refuse it
        raise InvalidArgument(f"manifest {descriptor.manifest_path} cannot be read: {exc}") from None
    listed = set(descriptor.data_files)
    for entry in entries:
        if entry.snapshot_id != descriptor.snapshot_id or entry.status != ManifestEntryStatus.ADDED:
            raise InvalidArgument(
                f"manifest {descriptor.manifest_path} holds an entry of snapshot {entry.snapshot_id}, "
                f"not one added by {descriptor.snapshot_id}"
            )
        if entry.data_file.file_path not in listed:
            raise InvalidArgument(
                f"manifest {descriptor.manifest_path} lists {entry.data_file.file_path}, "
                "which its description does not"
            )
    if len(entries) != descriptor.added_files_count:
        raise InvalidArgument(
            f"manifest {descriptor.manifest_path} holds {len(entries)} files, its description says "
            f"{descriptor.added_files_count}"
        )


def check_schema_change(descriptor: ManifestDescriptor, schema_mode: str, reserved: list[ReservedField]) -> None:
    """A manifest may add only the columns its job reserved (schema mode evolve), under their ids."""
    change = descriptor.schema_change
    if not change:
        return
    if schema_mode != SchemaMode.EVOLVE.value:
        raise InvalidArgument(
            f"manifest {descriptor.manifest_path} changes the table's schema, but the job's schema mode is "
            f"{schema_mode} (only evolve adds columns or widens types)"
        )
    held = {r.field_id: r for r in reserved}
    for f in change.added:
        r = held.get(f.field_id)
        if r is None or r.path[-1] != f.name or r.parent_id != f.parent_id:
            raise InvalidArgument(
                f"manifest {descriptor.manifest_path} adds column {f.name!r} as field id {f.field_id}, "
                "which the job did not reserve for it"
            )
