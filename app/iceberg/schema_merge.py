"""Rebasing a job's new columns over the table's schema as it is at commit.

The job's :class:`SchemaChange` names the fields its tasks added with the ids reserved for them. While
the job ran another writer may have changed the schema; :func:`rebase_change` walks the job's new
fields from the top (parents before children) and, for each:

- another writer added a field of the same name at the same place (top level, or inside the same
  struct, list or map): when the types are compatible (equal, or one widens to the other: int to
  long, float to double, a decimal's precision up at the same scale; a struct with a struct, a list
  with a list, a map with a map) ours is merged into theirs: our id maps to theirs, and the column is
  widened to ours when ours is the wider; our children are merged into theirs by name the same way,
  those they lack are added under their field. An incompatible type (or a required field of theirs,
  which our rows may leave null) is a :class:`SchemaConflict` naming the column and both types;
- our reserved id is held by another column of the table, or was used by a column of an older schema
  (an id is never reused): our field is added under a fresh id above the table's last-column-id;
- otherwise it is added as reserved (under its parent's id as rebased).

The result maps each of our ids that changed to the id the table will hold; the data files carrying
them are rewritten at commit (:mod:`app.iceberg.field_remap`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pyiceberg.schema import Schema
from pyiceberg.types import IcebergType, ListType, MapType, NestedField, PrimitiveType, StructType

from app.iceberg.schema_change import (
    NESTED,
    ROOT,
    NewField,
    SchemaChange,
    SchemaConflict,
    index_fields,
    parse_type,
    wider,
)

_KINDS: dict[str, type[IcebergType]] = {"struct": StructType, "list": ListType, "map": MapType}


@dataclass(frozen=True)
class Rebase:
    change: SchemaChange  # the job's change with the ids and parents the table will hold
    remap: dict[int, int] = field(default_factory=dict)  # our field id -> the id it becomes


def _children(t: IcebergType) -> list[NestedField]:
    if isinstance(t, StructType):
        return list(t.fields)
    if isinstance(t, ListType):
        return [t.element_field]
    if isinstance(t, MapType):
        return [t.key_field, t.value_field]
    return []


class _Rebaser:
    def __init__(self, base: Schema, change: SchemaChange, taken: Mapping[int, str], last_column_id: int) -> None:
        self.base = base
        self.index = index_fields(base)
        self.widened: dict[int, PrimitiveType] = {i: parse_type(t) for i, t in change.widened}
        ours = {f.field_id for f in change.added}
        self.kids: dict[int, list[NewField]] = defaultdict(list)
        for f in change.added:
            self.kids[f.parent_id if f.parent_id in ours else ROOT].append(f)
        self.used = set(self.index) | set(taken) | ours
        self.taken = taken
        self._fresh = self._ids(last_column_id + 1)
        self.remap: dict[int, int] = {}
        self.added: list[NewField] = []

    def _ids(self, start: int) -> Iterator[int]:
        n = start
        while True:
            if n not in self.used:
                self.used.add(n)
                yield n
            n += 1

    def siblings(self, parent: int) -> dict[str, NestedField]:
        if parent == ROOT:
            return {f.name: f for f in self.base.fields}
        present = self.index.get(parent)
        return {} if present is None else {f.name: f for f in _children(present[1].field_type)}

    def visit(self, f: NewField, parent: int, prefix: str, in_map: bool) -> None:
        path = f"{prefix}.{f.name}" if prefix else f.name
        theirs = self.siblings(parent).get(f.name)
        if theirs is not None:
            target = theirs.field_id
            self._merge(f, theirs, path, key=in_map and f.name == "key")
        else:
            target = f.field_id
            if target in self.index or target in self.taken:
                target = next(self._fresh)
            self.added.append(NewField(target, parent, f.name, f.type))
        if target != f.field_id:
            self.remap[f.field_id] = target
        for kid in self.kids.get(f.field_id, []):
            self.visit(kid, target, path, f.type == "map")

    def _merge(self, f: NewField, theirs: NestedField, path: str, key: bool) -> None:
        have = theirs.field_type
        ours_text = f.type
        ok = not theirs.required or key
        if f.type in NESTED:
            ok = ok and isinstance(have, _KINDS[f.type])
        else:
            ours: PrimitiveType | None = parse_type(f.type)
            if f.field_id in self.widened:
                ours = wider(ours, self.widened.pop(f.field_id))  # type: ignore[arg-type,assignment]
            both = wider(have, ours) if ours is not None and isinstance(have, PrimitiveType) else None
            ok = ok and both is not None and (not key or both == have)  # a map key is never widened
            if ok and both != have:
                self.widened[theirs.field_id] = both  # type: ignore[assignment]
            ours_text = str(ours or f.type)
        if not ok:
            required = "required " if theirs.required and not key else ""
            raise SchemaConflict(
                f"column {path!r} was added by another writer while the job ran (field id {theirs.field_id}, "
                f"{required}{have}); this job's data files carry field id {f.field_id} ({ours_text}) for it, "
                "so the two cannot be merged; nothing was committed: run the job again"
            )

    def name_of(self, parent: int) -> str:
        if parent == ROOT:
            return ""
        return self.base.find_column_name(parent) or f"<field {parent}>"


def rebase_change(
    base: Schema, change: SchemaChange, taken: Mapping[int, str] | None = None, last_column_id: int = 0
) -> Rebase:
    """``change`` rebased over ``base`` (the table's current schema; ``taken``: ids older schemas used;
    fresh ids start above ``last_column_id``)."""
    if not change.added:
        return Rebase(change)
    rebaser = _Rebaser(base, change, taken or {}, max(last_column_id, base.highest_field_id))
    for f in rebaser.kids.get(ROOT, []):
        present = rebaser.index.get(f.parent_id)
        in_map = present is not None and isinstance(present[1].field_type, MapType)
        rebaser.visit(f, f.parent_id, rebaser.name_of(f.parent_id), in_map)
    widened: dict[int, str] = {}
    for field_id, t in rebaser.widened.items():
        target = rebaser.remap.get(field_id, field_id)
        known = widened.get(target)
        widened[target] = str(t if known is None else (wider(parse_type(known), t) or t))
    rebased = SchemaChange(
        tuple(sorted(rebaser.added, key=lambda f: f.field_id)), tuple(sorted(widened.items()))
    )
    return Rebase(rebased, rebaser.remap)

