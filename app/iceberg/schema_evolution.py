"""Sources whose columns drift: a job's schema mode, the change its tasks make to the table's schema,
and how that change lands in the job's one commit.

Modes (StartJob's ``schema_mode``; the table property ``floe.schema-mode`` gives the default):

- ``strict`` (the default): a source column the table lacks fails the task, naming the file and
  the columns; a value its column cannot hold fails it too;
- ``evolve``: new columns (top level, inside structs, lists and maps) are added as optional fields,
  and types widen where Iceberg allows: int to long, float to double, a decimal's precision up at
  the same scale; any other change is an error naming the column and both types;
- ``ignore``: columns the table lacks are left out (Floe's behaviour before schema modes).

Field ids. Readers match a Parquet column to the table by field id, so every task of a job that
meets the same new column must write it under the same id. A task asks the job store for an id per
new column path (``JobStore.reserve_fields``): the first request wins and every later one (another
host, a redelivered task) gets the same id. Ids come from one counter per table, shared by all of
Floe's jobs on it (two concurrent jobs never hand out the same id), that starts
``RESERVED_ID_GAP`` above the table's last-column-id. Other writers (Spark, pyiceberg's
``update_schema``) assign last-column-id + 1, + 2, ..., so they would have to add a thousand
columns while one job runs before one of their ids met one of ours.

Another writer's columns at commit (:mod:`app.iceberg.schema_merge`). Should another writer add a
column of the same name at the same place (top level, or inside the same struct) while the job ran,
the job's column is merged into theirs when the types are compatible (equal, or one widens to the
other; a struct with a struct, merged child by child, ours they lack added under theirs): the table
keeps their field id, widened to our type when ours is the wider (when theirs is, our files keep
their narrower type, which readers promote as for any widened column). Should a reserved id be taken
after all (by a column of the table, or of an older schema: ids are never reused), our column gets a
fresh id above the table's last-column-id. Either way the job's data files carry ids the table will
not hold, so the commit rewrites those that do (:mod:`app.iceberg.field_remap`): each is copied with
the new ids in its Parquet schema, the same values, codec and row groups, as ``<name>-remapped.parquet``,
into rewritten task manifests committed instead of the originals, which are deleted once the job is
complete. The cost is one read and one write of the affected files, on the committer, for each commit
attempt that needs it; the common case (no such column) costs nothing. The job still fails, with a
:class:`SchemaConflict` naming the column and both types, when the two cannot be merged: the same name
with a type neither widens to (or a required field of theirs); then nothing is committed and the
job's files (copies included) are deleted.

Every task records what it wrote with in its manifest descriptor (a :class:`SchemaChange`: the fields
it added with their ids, parents and types, and the columns it widened). The commit merges the
descriptors' changes (:meth:`SchemaChange.union`) and, on every attempt, applies them to the table's
schema as it is then (:func:`plan_schema_commit`): another writer's columns are kept, ours are added
again on top, widenings re-applied; the new schema is added and made current in the same catalog
commit as the job's snapshot, with ``AssertCurrentSchemaId`` and ``AssertLastAssignedFieldId`` so a
schema change racing the commit makes it rebase. A retried commit finds its snapshot among main's
ancestors and adds nothing; a schema equal to one the table already has is reused, never added twice.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from pyiceberg.schema import Schema
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import (
    AddSchemaUpdate,
    AssertCurrentSchemaId,
    AssertLastAssignedFieldId,
    SetCurrentSchemaUpdate,
    TableRequirement,
    TableUpdate,
)

from app.errors import InvalidArgument
from app.iceberg.schema_change import (
    MAX_FIELD_ID,
    ROOT,
    WIDENINGS,
    NewField,
    SchemaChange,
    SchemaConflict,
    evolve_schema,
    index_fields,
    parse_type,
    promotes,
    wider,
)
from app.iceberg.schema_merge import rebase_change

__all__ = [
    "MAX_FIELD_ID",
    "RESERVED_ID_GAP",
    "ROOT",
    "SCHEMA_MODE_PROPERTY",
    "WIDENINGS",
    "FieldRequest",
    "FieldReserver",
    "LocalFieldIds",
    "ReservedField",
    "NewField",
    "SchemaChange",
    "SchemaCommit",
    "SchemaConflict",
    "SchemaMode",
    "evolve_schema",
    "parse_schema_mode",
    "parse_type",
    "plan_schema_commit",
    "promotes",
    "resolve_schema_mode",
    "wider",
]

SCHEMA_MODE_PROPERTY = "floe.schema-mode"
RESERVED_ID_GAP = 1000  # a job's new field ids start this far above the table's last-column-id


class SchemaMode(str, Enum):
    STRICT = "strict"
    EVOLVE = "evolve"
    IGNORE = "ignore"


def parse_schema_mode(value: str, label: str) -> SchemaMode:
    try:
        return SchemaMode(value.strip().lower())
    except ValueError:
        raise InvalidArgument(
            f"{label}={value[:80]!r} is not a schema mode: use strict, evolve or ignore"
        ) from None


def resolve_schema_mode(requested: str, properties: Mapping[str, str], table: str) -> SchemaMode:
    """The job's mode: the one requested, else the table's ``floe.schema-mode``, else strict."""
    if requested:
        return parse_schema_mode(requested, "schema_mode")
    value = properties.get(SCHEMA_MODE_PROPERTY)
    if value is None:
        return SchemaMode.STRICT
    return parse_schema_mode(value, f"table {table} property {SCHEMA_MODE_PROPERTY}")


@dataclass(frozen=True)
class FieldRequest:
    """A task asks for a field id for a new column: its path of names (a list's element is named
    ``element``, a map's ``key``/``value``), its type (primitive name, or struct / list / map), and its
    parent: an existing field's id (ROOT at the top), or the path of a new field asked for before it."""

    path: tuple[str, ...]
    type: str
    parent: int | tuple[str, ...]


@dataclass(frozen=True)
class ReservedField:
    """What the job holds for a new column path: the id, the type and parent of its first reservation."""

    path: tuple[str, ...]
    field_id: int
    type: str
    parent_id: int

    @classmethod
    def from_json(cls, path: tuple[str, ...], raw: str) -> ReservedField:
        data = json.loads(raw)
        return cls(path, int(data["id"]), str(data["type"]), int(data["parent"]))


# (floor, requests) -> the reservation of each request, in order; first reservation of a path wins
FieldReserver = Callable[[int, "list[FieldRequest]"], "list[ReservedField]"]


class LocalFieldIds:
    """A :data:`FieldReserver` for one process (library use, tests): the job store's reservation
    (``JobStore.reserve_fields``) is what makes tasks on many hosts agree."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, ...], ReservedField] = {}
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self, floor: int, requests: list[FieldRequest]) -> list[ReservedField]:
        out = []
        with self._lock:
            for r in requests:
                held = self._held.get(r.path)
                if held is None:
                    parent = r.parent if isinstance(r.parent, int) else self._held[r.parent].field_id
                    self._next = max(self._next, floor)
                    held = self._held[r.path] = ReservedField(r.path, self._next, r.type, parent)
                    self._next += 1
                out.append(held)
        return out


@dataclass(frozen=True)
class SchemaCommit:
    schema: Schema  # the schema the job's snapshot carries
    updates: tuple[TableUpdate, ...] = ()
    requirements: tuple[TableRequirement, ...] = ()
    remap: Mapping[int, int] = field(default_factory=dict)  # our field id -> the table's: files to rewrite


def plan_schema_commit(metadata: TableMetadata, change: SchemaChange) -> SchemaCommit:
    """The updates and requirements that make the job's schema current with its snapshot, applied to
    the table's schema as it is in ``metadata`` (another writer's columns kept, ours added on top, or
    merged into theirs of the same name: ``remap`` then says which of our ids the data files must change)."""
    current = metadata.schema()
    if not change:
        return SchemaCommit(current)
    now = index_fields(current)
    taken = {
        field_id: s.find_column_name(field_id) or str(field_id)
        for s in metadata.schemas
        for field_id in index_fields(s)
        if field_id not in now
    }
    next_id = max(s.schema_id for s in metadata.schemas) + 1
    rebased = rebase_change(current, change, taken, metadata.last_column_id)
    remap = rebased.remap
    evolved = evolve_schema(current, rebased.change, schema_id=next_id, taken=taken)
    requirements: tuple[TableRequirement, ...] = (
        AssertCurrentSchemaId(current_schema_id=current.schema_id),
        AssertLastAssignedFieldId(last_assigned_field_id=metadata.last_column_id),
    )
    if evolved == current:  # the table holds every field already: nothing to add
        return SchemaCommit(current, (), requirements if remap else (), remap)
    same = next((s for s in metadata.schemas if s == evolved), None)
    if same is not None:
        return SchemaCommit(same, (SetCurrentSchemaUpdate(schema_id=same.schema_id),), requirements, remap)
    return SchemaCommit(
        evolved, (AddSchemaUpdate(schema_=evolved), SetCurrentSchemaUpdate(schema_id=-1)), requirements, remap
    )
