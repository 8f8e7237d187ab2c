"""app.iceberg.schema_evolution: merging the tasks' schema changes, applying them to the table's schema
as it is at commit, and the commit that adds the schema with the job's snapshot (library level, a real
SQLite catalog; the job-level behaviour is in tests/test_schema_drift.py)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.schema import Schema
from pyiceberg.types import (
    DecimalType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    StructType,
)

from app.errors import InvalidArgument
from app.iceberg import begin_distributed_snapshot, commit_distributed_snapshot
from app.iceberg.schema_evolution import (
    ROOT,
    NewField,
    SchemaChange,
    SchemaConflict,
    SchemaMode,
    evolve_schema,
    resolve_schema_mode,
)
from app.iceberg.schema_merge import rebase_change
from tests.support.catalogs import CatalogHandle
from workers.conversion import write_task_manifest

BASE = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "n", IntegerType()),
    NestedField(3, "s", StructType(NestedField(4, "a", StringType()))),
    identifier_field_ids=[1],
)


def test_the_tasks_changes_merge_into_one_at_the_widest_types() -> None:
    a = SchemaChange(
        (NewField(1005, ROOT, "x", "int"), NewField(1006, 3, "b", "decimal(10, 2)")), ((2, "long"),)
    )
    b = SchemaChange((NewField(1005, ROOT, "x", "long"), NewField(1006, 3, "b", "decimal(12, 2)")))
    merged = SchemaChange.union([a, b])
    assert merged == SchemaChange(
        (NewField(1005, ROOT, "x", "long"), NewField(1006, 3, "b", "decimal(12, 2)")), ((2, "long"),)
    )
    assert SchemaChange.from_dict(merged.to_dict()) == merged
    evolved = evolve_schema(BASE, merged)
    assert (
        evolved.find_field("x").field_type == LongType() and evolved.find_field("n").field_type == LongType()
    )
    assert evolved.find_field("s.b").field_type == DecimalType(12, 2) and evolved.identifier_field_ids == [1]
    with pytest.raises(SchemaConflict, match="field id 1005 was written as column 'x' and as 'y'"):
        SchemaChange.union([a, SchemaChange((NewField(1005, ROOT, "y", "int"),))])
    with pytest.raises(SchemaConflict, match="new column 'x' was written as int and as string"):
        SchemaChange.union([a, SchemaChange((NewField(1005, ROOT, "x", "string"),))])
    with pytest.raises(InvalidArgument, match="not a valid schema change"):
        SchemaChange.from_dict({"added": [[0, ROOT, "x", "long"]]})


def test_an_id_an_older_schema_used_or_a_dropped_parent_is_a_conflict() -> None:
    change = SchemaChange((NewField(1005, ROOT, "x", "long"),))
    with pytest.raises(SchemaConflict, match=r"field id 1005, reserved by this job for column 'x', was used by "
                                             r"column 'gone' in an older schema"):  # fmt: skip
        evolve_schema(BASE, change, taken={1005: "gone"})
    with pytest.raises(
        SchemaConflict, match=r"field id 2, reserved by this job for column 'n2', is column 'n'"
    ):
        evolve_schema(BASE, SchemaChange((NewField(2, ROOT, "n2", "long"),)))
    inside_dropped = SchemaChange((NewField(1005, 9, "c", "long"),))
    with pytest.raises(SchemaConflict, match=r"new column\(s\) '<field 9>.c' belong inside field 9"):
        evolve_schema(BASE, inside_dropped)
    with pytest.raises(SchemaConflict, match="column 'n' is int in the table; this job wrote it as string"):
        evolve_schema(BASE, SchemaChange((), ((2, "string"),)))


def test_a_rebase_merges_same_named_columns_and_moves_taken_ids_to_fresh_ones() -> None:
    """app.iceberg.schema_merge: what the commit does before evolve_schema (the job level, with the data
    files rewritten, is in tests/test_schema_merge.py)."""
    theirs = Schema(
        *BASE.fields,
        NestedField(5, "score", IntegerType()),
        NestedField(6, "t", StructType(NestedField(7, "a", StringType()))),
        NestedField(8, "tags", ListType(9, StringType(), element_required=True)),
        NestedField(10, "m", MapType(11, StringType(), 12, LongType(), value_required=False)),
        identifier_field_ids=[1],
    )
    change = SchemaChange((
        NewField(1001, ROOT, "score", "long"),  # theirs is int: merged, widened to long
        NewField(1002, ROOT, "t", "struct"),
        NewField(1003, 1002, "a", "string"),  # merged into t.a
        NewField(1004, 1002, "c", "long"),  # added under their t, keeps its id
        NewField(1005, ROOT, "x", "long"),  # an older schema used 1005: a fresh id
        NewField(1006, 3, "b", "int"),
        NewField(1007, ROOT, "m", "map"),
        NewField(1008, 1007, "key", "string"),
        NewField(1009, 1007, "value", "int"),  # theirs is long: our int files read promoted
    ), ((1006, "long"),))  # fmt: skip
    rebased = rebase_change(theirs, change, {1005: "gone"}, last_column_id=12)
    assert rebased.remap == {1001: 5, 1002: 6, 1003: 7, 1005: 13, 1007: 10, 1008: 11, 1009: 12}
    assert rebased.change == SchemaChange(
        (NewField(13, ROOT, "x", "long"), NewField(1004, 6, "c", "long"), NewField(1006, 3, "b", "int")),
        ((5, "long"), (1006, "long")),
    )
    evolved = evolve_schema(theirs, rebased.change, taken={1005: "gone"})
    assert [(c, evolved.find_field(c).field_id, evolved.find_field(c).field_type) for c in ("score", "t.c", "x")] == [
        ("score", 5, LongType()), ("t.c", 1004, LongType()), ("x", 13, LongType())
    ]  # fmt: skip
    # an id held by another column of the table moves too, above every id in use
    assert rebase_change(BASE, SchemaChange((NewField(2, ROOT, "n2", "long"),)), {}, 4).remap == {2: 5}
    # the same name with a type neither widens to, a required field of theirs, a narrower map key: conflicts
    for bad, message in (
        (NewField(1001, ROOT, "score", "string"), r"column 'score' .*\(field id 5, int\); .*\(string\)"),
        (NewField(1001, ROOT, "t", "list"), r"column 't' .*\(field id 6, struct<7: a: optional string>\)"),
        (NewField(1001, 3, "a", "long"), r"column 's.a' .*\(field id 4, string\)"),
    ):
        with pytest.raises(SchemaConflict, match=message + ".* for it, so the two cannot be merged"):
            rebase_change(theirs, SchemaChange((bad,)), {}, 12)
    required_element = SchemaChange(
        (NewField(1001, ROOT, "tags", "list"), NewField(1002, 1001, "element", "string"))
    )
    with pytest.raises(SchemaConflict, match=r"column 'tags.element' .*\(field id 9, required string\)"):
        rebase_change(theirs, required_element, {}, 12)
    wider_key = SchemaChange((NewField(1001, ROOT, "k", "map"), NewField(1002, 1001, "key", "long"),
                              NewField(1003, 1001, "value", "long")))  # fmt: skip
    keyed = Schema(NestedField(1, "k", MapType(2, IntegerType(), 3, LongType(), value_required=False)))
    with pytest.raises(SchemaConflict, match=r"column 'k.key' .*\(field id 2, int\)"):
        rebase_change(keyed, wider_key, {}, 3)


def test_the_mode_comes_from_the_request_then_the_table_property() -> None:
    assert resolve_schema_mode("", {}, "t") == SchemaMode.STRICT
    assert resolve_schema_mode("", {"floe.schema-mode": "Evolve"}, "t") == SchemaMode.EVOLVE
    assert resolve_schema_mode("ignore", {"floe.schema-mode": "evolve"}, "t") == SchemaMode.IGNORE
    with pytest.raises(InvalidArgument, match=r"^table t property floe.schema-mode='x' is not a schema mode"):
        resolve_schema_mode("", {"floe.schema-mode": "x"}, "t")


def test_a_schema_change_racing_the_commit_makes_it_rebase(
    sqlite_catalog: CatalogHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer's schema change lands between the commit's reload and its catalog call: the
    catalog refuses the attempt (AssertCurrentSchemaId), the next one keeps their column and adds ours."""
    cat = sqlite_catalog.catalog
    table = cat.create_table("ns.t", schema=BASE)
    table.append(pa.Table.from_pylist([{"id": 0, "n": 1}], schema=table.schema().as_arrow()))
    table = cat.load_table("ns.t")
    snapshot = begin_distributed_snapshot(table)
    source = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": pa.array([10], pa.int64()), "n": pa.array([2**40]), "dec": pa.array(
        [Decimal("1.5")], pa.decimal128(4, 1))}), source)  # fmt: skip
    tasks = [
        write_task_manifest(snapshot, table, [source], f"t{i}", schema_mode=SchemaMode.EVOLVE) for i in (1, 2)
    ]
    manifests = [m for m in tasks if m is not None]
    assert manifests[0].schema_change == manifests[1].schema_change  # one process's tasks agree on ids

    real_commit = cat.commit_table
    refused: list[str] = []
    props = sqlite_catalog.properties
    other = SqlCatalog(props["name"], uri=props["uri"], warehouse=props["warehouse"])  # another writer

    def racing(tbl: Any, requirements: Any, updates: Any) -> Any:
        if not refused:
            with other.load_table("ns.t").update_schema() as update:
                update.add_column("theirs", StringType())
            try:
                return real_commit(tbl, requirements, updates)
            except CommitFailedException as exc:
                refused.append(str(exc))
                raise
        return real_commit(tbl, requirements, updates)

    monkeypatch.setattr(cat, "commit_table", racing)
    try:
        outcome = commit_distributed_snapshot(table, snapshot, manifests, {"floe.job-id": "job-1"})
    finally:
        other.engine.dispose()
    assert outcome.attempts == 2 and "current schema id has changed" in refused[0]
    table = cat.load_table("ns.t")
    schema = table.schema()
    assert [f.name for f in schema.fields] == ["id", "n", "s", "theirs", "dec"]
    assert schema.find_field("n").field_type == LongType() and schema.find_field(
        "dec"
    ).field_type == DecimalType(4, 1)
    assert table.current_snapshot().schema_id == schema.schema_id  # type: ignore[union-attr]
    rows = sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["id"])
    assert [(r["id"], r["n"], r["theirs"], r["dec"]) for r in rows] == [
        (0, 1, None, None), (10, 2**40, None, Decimal("1.5")), (10, 2**40, None, Decimal("1.5"))
    ]  # fmt: skip
    # committing again finds the snapshot and adds nothing
    again = commit_distributed_snapshot(table, snapshot, manifests, {"floe.job-id": "job-1"})
    assert again.attempts == 0 and len(cat.load_table("ns.t").metadata.schemas) == len(table.metadata.schemas)
