"""The change a job makes to a table's schema (schema mode evolve) and applying it to a schema.

A :class:`SchemaChange` lists the fields a task added (id, parent, name, type) and the columns it
widened; tasks record theirs in their manifest descriptors, the commit merges them
(:meth:`SchemaChange.union`) and applies the union to the table's schema (:func:`evolve_schema`).
Why ids are reserved the way they are: :mod:`app.iceberg.schema_evolution`.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pyiceberg.schema import Schema
from pyiceberg.types import (
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    PrimitiveType,
    StructType,
)

from app.errors import FailedPrecondition, InvalidArgument

ROOT = -1  # the parent id of a top-level column
MAX_FIELD_ID = 2**31 - 1
NESTED = ("struct", "list", "map")
WIDENINGS = "int to long, float to double, a decimal's precision up at the same scale"


class SchemaConflict(FailedPrecondition):
    """The job's new columns cannot be merged into the table's schema (the job fails)."""


# --- types -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def parse_type(text: str) -> PrimitiveType:
    """An Iceberg primitive type from its name ("long", "decimal(12, 2)", "fixed[16]")."""
    try:
        parsed = NestedField.model_validate(
            {"id": 1, "name": "x", "type": text, "required": False}
        ).field_type
    except ValueError:
        parsed = None
    if not isinstance(parsed, PrimitiveType):
        raise InvalidArgument(f"{text!r} is not an Iceberg primitive type")
    return parsed


def promotes(frm: IcebergType, to: IcebergType) -> bool:
    """Whether Iceberg widens ``frm`` to ``to``: int→long, float→double, decimal precision up (same scale)."""
    if isinstance(frm, IntegerType):
        return isinstance(to, LongType)
    if isinstance(frm, FloatType):
        return isinstance(to, DoubleType)
    if isinstance(frm, DecimalType) and isinstance(to, DecimalType):
        return to.scale == frm.scale and to.precision > frm.precision
    return False


def wider(a: IcebergType, b: IcebergType) -> IcebergType | None:
    """The wider of two types when one widens to the other (or they are equal), else None."""
    if a == b or promotes(b, a):
        return a
    return b if promotes(a, b) else None


def _wider_text(a: str, b: str, what: str) -> str:
    if a == b:
        return a
    both = None if a in NESTED or b in NESTED else wider(parse_type(a), parse_type(b))
    if both is None:
        raise SchemaConflict(
            f"{what} was written as {a} and as {b}, which Iceberg cannot reconcile ({WIDENINGS})"
        )
    return str(both)


# --- the change a job makes ------------------------------------------------------------------------


@dataclass(frozen=True)
class NewField:
    """A field a job adds: ``type`` is a primitive type name, or struct / list / map (whose children
    are new fields too: a list's is named ``element``, a map's ``key`` and ``value``)."""

    field_id: int
    parent_id: int  # ROOT for a top-level column
    name: str
    type: str


@dataclass(frozen=True)
class SchemaChange:
    """What a task (or, merged, a job) wrote with beyond the schema it was reserved against."""

    added: tuple[NewField, ...] = ()
    widened: tuple[tuple[int, str], ...] = ()  # (existing field id, its new primitive type)

    def __bool__(self) -> bool:
        return bool(self.added or self.widened)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": [[f.field_id, f.parent_id, f.name, f.type] for f in self.added],
            "widened": [[field_id, t] for field_id, t in self.widened],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SchemaChange:
        if not data:
            return cls()
        try:
            added = tuple(
                NewField(_id(i), _parent(p), _name(n), _type(t)) for i, p, n, t in data.get("added") or []
            )
            widened = tuple((_id(i), str(parse_type(str(t)))) for i, t in data.get("widened") or [])
            return cls.union([cls(added, widened)])
        except (TypeError, ValueError, InvalidArgument, SchemaConflict) as exc:
            raise InvalidArgument(f"not a valid schema change: {exc}") from None

    @classmethod
    def union(cls, changes: Iterable[SchemaChange]) -> SchemaChange:
        """One change holding all of ``changes`` (the same field added by many tasks is added once, at
        the widest type any of them wrote); SchemaConflict when they disagree on a field."""
        added: dict[int, NewField] = {}
        widened: dict[int, str] = {}
        for change in changes:
            for f in change.added:
                known = added.get(f.field_id)
                if known is not None and (known.parent_id, known.name) != (f.parent_id, f.name):
                    raise SchemaConflict(
                        f"field id {f.field_id} was written as column {known.name!r} and as {f.name!r}"
                    )
                added[f.field_id] = (
                    f
                    if known is None
                    else replace(known, type=_wider_text(known.type, f.type, f"new column {f.name!r}"))
                )
            for field_id, t in change.widened:
                known_type = widened.get(field_id)
                widened[field_id] = (
                    t if known_type is None else _wider_text(known_type, t, f"field {field_id}")
                )
        return cls(tuple(sorted(added.values(), key=lambda f: f.field_id)), tuple(sorted(widened.items())))


def _id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_FIELD_ID:
        raise ValueError(f"{value!r} is not a field id")
    return value


def _parent(value: object) -> int:
    return ROOT if value == ROOT else _id(value)


def _name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a column name")
    return value


def _type(value: object) -> str:
    text = str(value)
    return text if text in NESTED else str(parse_type(text))


# --- applying it to a schema ---------------------------------------------------------------------


def _walk(t: IcebergType, parent: int, out: dict[int, tuple[int, NestedField]]) -> None:
    fields: list[NestedField] = []
    if isinstance(t, StructType):
        fields = list(t.fields)
    elif isinstance(t, ListType):
        fields = [t.element_field]
    elif isinstance(t, MapType):
        fields = [t.key_field, t.value_field]
    for f in fields:
        out[f.field_id] = (parent, f)
        _walk(f.field_type, f.field_id, out)


def index_fields(schema: Schema) -> dict[int, tuple[int, NestedField]]:
    """Every field of ``schema`` by id, with its parent's id (ROOT at the top)."""
    out: dict[int, tuple[int, NestedField]] = {}
    _walk(schema.as_struct(), ROOT, out)
    return out


class _Evolver:
    def __init__(self, base: Schema, change: SchemaChange, taken: Mapping[int, str]) -> None:
        self.index = index_fields(base)
        self.widened = {field_id: parse_type(t) for field_id, t in change.widened}
        self.kids: dict[int, list[NewField]] = defaultdict(list)
        self.new: dict[int, NewField] = {}
        for f in change.added:
            present = self.index.get(f.field_id)
            if present is not None:
                parent, have = present
                if (parent, have.name) != (f.parent_id, f.name):
                    raise SchemaConflict(
                        f"field id {f.field_id}, reserved by this job for column {self.path(f)!r}, is column "
                        f"{self.name_of(f.field_id)!r} in the table: another writer took it while the job ran "
                        "(its data files carry that id); nothing was committed"
                    )
                if f.type not in NESTED:  # already there (the same column): at most widen it
                    self.widened.setdefault(f.field_id, parse_type(f.type))
                continue
            if f.field_id in taken:
                raise SchemaConflict(
                    f"field id {f.field_id}, reserved by this job for column {self.path(f)!r}, was used by column "
                    f"{taken[f.field_id]!r} in an older schema of the table; nothing was committed"
                )
            self.new[f.field_id] = f
            self.kids[f.parent_id].append(f)
        for parent in self.kids:
            if parent != ROOT and parent not in self.new and not self._is_struct(parent):
                names = ", ".join(repr(self.path(k)) for k in self.kids[parent])
                raise SchemaConflict(
                    f"new column(s) {names} belong inside field {parent}, which the table no longer has as a struct "
                    "(another writer changed it while the job ran); nothing was committed"
                )

    def _is_struct(self, field_id: int) -> bool:
        present = self.index.get(field_id)
        return present is not None and isinstance(present[1].field_type, StructType)

    def name_of(self, field_id: int) -> str:
        if field_id == ROOT:
            return ""
        if field_id in self.new:
            return self.path(self.new[field_id])
        if field_id not in self.index:
            return f"<field {field_id}>"
        parent, f = self.index[field_id]
        return f"{self.name_of(parent)}.{f.name}" if parent != ROOT else f.name

    def path(self, f: NewField) -> str:
        prefix = self.name_of(f.parent_id)
        return f"{prefix}.{f.name}" if prefix else f.name

    def struct(self, fields: Iterable[NestedField], parent: int) -> list[NestedField]:
        out = [self.field(f) for f in fields]
        names = {f.name: f for f in out}
        for nf in self.kids.get(parent, []):
            theirs = names.get(nf.name)
            if theirs is not None:
                raise SchemaConflict(
                    f"column {self.path(nf)!r} was added by another writer while the job ran (field id "
                    f"{theirs.field_id}, {theirs.field_type}); this job's data files carry field id {nf.field_id} "
                    f"({nf.type}) for it, so the two cannot be merged; nothing was committed: run the job again"
                )
            out.append(NestedField(nf.field_id, nf.name, self.new_type(nf), required=False))
        return out

    def field(self, f: NestedField) -> NestedField:
        t = f.field_type
        if isinstance(t, StructType):
            t = StructType(*self.struct(t.fields, f.field_id))
        elif isinstance(t, ListType):
            t = ListType(t.element_id, self.field(t.element_field).field_type, t.element_required)
        elif isinstance(t, MapType):
            value = self.field(t.value_field).field_type
            t = MapType(t.key_id, t.key_type, t.value_id, value, t.value_required)
        elif f.field_id in self.widened:
            t = self._widen(f, t, self.widened[f.field_id])
        return f.model_copy(update={"field_type": t})

    def _widen(self, f: NestedField, have: IcebergType, want: PrimitiveType) -> IcebergType:
        both = wider(have, want)
        if both is None:
            raise SchemaConflict(
                f"column {self.name_of(f.field_id)!r} is {have} in the table; this job wrote it as {want}, and "
                f"Iceberg cannot change one into the other ({WIDENINGS})"
            )
        return both

    def new_type(self, nf: NewField) -> IcebergType:
        kids = {k.name: k for k in self.kids.get(nf.field_id, [])}
        try:
            if nf.type == "struct":
                return StructType(*self.struct([], nf.field_id))
            if nf.type == "list":
                element = kids["element"]
                return ListType(element.field_id, self.new_type(element), element_required=False)
            if nf.type == "map":
                key, value = kids["key"], kids["value"]
                return MapType(
                    key.field_id,
                    self.new_type(key),
                    value.field_id,
                    self.new_type(value),
                    value_required=False,
                )
        except KeyError as exc:
            raise InvalidArgument(f"new {nf.type} column {self.path(nf)!r} has no {exc} field") from None
        t = parse_type(nf.type)
        want = self.widened.get(nf.field_id)
        return t if want is None else self._widen_new(nf, t, want)

    def _widen_new(self, nf: NewField, have: PrimitiveType, want: PrimitiveType) -> IcebergType:
        both = wider(have, want)
        if both is None:
            raise SchemaConflict(
                f"new column {self.path(nf)!r} was written as {have} and as {want} ({WIDENINGS})"
            )
        return both


def evolve_schema(
    base: Schema, change: SchemaChange, schema_id: int | None = None, taken: Mapping[int, str] | None = None
) -> Schema:
    """``base`` with ``change`` applied (``taken``: ids older schemas used, never to be reused)."""
    if not change:
        return base
    evolver = _Evolver(base, change, taken or {})
    fields = evolver.struct(base.fields, ROOT)
    return Schema(
        *fields,
        schema_id=base.schema_id if schema_id is None else schema_id,
        identifier_field_ids=list(base.identifier_field_ids),
    )
