"""Sources whose columns drift (issue 17), through the real gRPC API, job service, redis-server and
catalog: the tasks the job registers are run as the Celery task runs them (workers.task_runner.run_task),
one settings (WORKER_DATA_BASE) per host; tests/test_system_schema_drift.py runs the real stack.

Schema modes: strict (the default) refuses source columns the table lacks and leaves no file behind;
evolve adds them (one field id per column, agreed through Redis by every host) and widens types,
in the job's one commit; ignore leaves them out. Old data files read null for the new columns, in
pyiceberg, iceberg-rust and DuckDB.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.types import (
    DecimalType,
    DoubleType,
    ListType,
    LongType,
    StringType,
    StructType,
)

from app.iceberg.schema_evolution import RESERVED_ID_GAP
from app.proto_gen.api import common_pb2
from tests.support.api_server import Api
from tests.support.drift import (
    added_ids,
    completed,
    files_under,
    make_wide,
    parquet,
    run,
    start,
    status,
    table_rows,
)

pytestmark = pytest.mark.integration


# --- evolve: new columns -------------------------------------------------------------------------------


def test_both_hosts_meet_the_same_new_column_and_write_it_under_one_id(api: Api, tmp_path: Path) -> None:
    table = make_wide(api)
    last = table.metadata.last_column_id
    parquet(
        tmp_path / "h1" / "a.parquet",
        {"id": pa.array([10, 11], pa.int64()), "score": pa.array([1, 2], pa.int64())},
    )
    (tmp_path / "h2").mkdir()
    (tmp_path / "h2" / "b.csv").write_text("id,score\n20,3\n21,4\n")
    job_id = start(api, {"h1": "*.parquet", "h2": "*.csv"}, "evolve")
    assert status(api, job_id).schema_mode == common_pb2.SCHEMA_MODE_EVOLVE
    run(api, job_id, tmp_path)
    completed(api, job_id)

    table = api.catalog.load_table("demo.events")
    score = table.schema().find_field("score")
    assert (
        score.field_id == last + RESERVED_ID_GAP + 1 and score.field_type == LongType() and not score.required
    )
    assert added_ids(api, job_id) == {"h1": {"score": score.field_id}, "h2": {"score": score.field_id}}
    # the schema was added once, made current in the job's snapshot, and the old row reads null
    assert len(table.metadata.schemas) == 2
    assert table.current_snapshot().schema_id == table.metadata.current_schema_id  # type: ignore[union-attr]
    assert [(r["id"], r["score"]) for r in table_rows(api)] == [(0, None), (10, 1), (11, 2), (20, 3), (21, 4)]


def test_two_hosts_add_two_different_columns(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "alpha": ["a10"]})
    parquet(tmp_path / "h2" / "b.parquet", {"id": pa.array([20], pa.int64()), "beta": pa.array([2.5])})
    job_id = start(api, {"h1": "*.parquet", "h2": "*.parquet"}, "evolve")
    run(api, job_id, tmp_path)
    completed(api, job_id)

    schema = api.catalog.load_table("demo.events").schema()
    alpha, beta = schema.find_field("alpha"), schema.find_field("beta")
    assert (alpha.field_type, beta.field_type) == (
        StringType(),
        DoubleType(),
    ) and alpha.field_id != beta.field_id
    assert added_ids(api, job_id) == {"h1": {"alpha": alpha.field_id}, "h2": {"beta": beta.field_id}}
    got = [(r["id"], r["alpha"], r["beta"]) for r in table_rows(api)]
    assert got == [(0, None, None), (10, "a10", None), (20, None, 2.5)]


def test_new_fields_inside_structs_lists_and_new_struct_columns(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    s_type = pa.struct([("a", pa.string()), ("b", pa.int64())])
    meta_type = pa.struct([("k", pa.string()), ("v", pa.float64())])
    parquet(tmp_path / "h1" / "a.parquet", {
        "id": pa.array([10], pa.int64()),
        "s": pa.array([{"a": "x", "b": 5}], s_type),
        "meta": pa.array([{"k": "key", "v": 0.5}], meta_type),
        "tags": pa.array([["t1", "t2"]], pa.list_(pa.string())),
    })  # fmt: skip
    (tmp_path / "h2").mkdir()
    (tmp_path / "h2" / "b.jsonl").write_text('{"id": 20, "s": {"a": "y", "c": "new"}, "meta": {"k": "k2"}}\n')
    job_id = start(api, {"h1": "*.parquet", "h2": "*.jsonl"}, "evolve")
    run(api, job_id, tmp_path)
    completed(api, job_id)

    schema = api.catalog.load_table("demo.events").schema()
    s = schema.find_field("s").field_type
    assert isinstance(s, StructType) and [(f.name, f.field_type) for f in s.fields] == [
        ("a", StringType()), ("b", LongType()), ("c", StringType())
    ]  # fmt: skip
    meta = schema.find_field("meta").field_type
    assert isinstance(meta, StructType) and [f.name for f in meta.fields] == ["k", "v"]
    tags = schema.find_field("tags").field_type
    assert isinstance(tags, ListType) and tags.element_type == StringType()
    # both hosts met meta and meta.k: one id each
    ids = added_ids(api, job_id)
    assert ids["h1"]["meta"] == ids["h2"]["meta"] and ids["h1"]["k"] == ids["h2"]["k"]
    got = {r["id"]: (r["s"], r["meta"], r["tags"]) for r in table_rows(api)}
    assert got == {
        0: ({"a": "old", "b": None, "c": None}, None, None),
        10: ({"a": "x", "b": 5, "c": None}, {"k": "key", "v": 0.5}, ["t1", "t2"]),
        20: ({"a": "y", "b": None, "c": "new"}, {"k": "k2", "v": None}, None),
    }


# --- evolve: widening, and what cannot be widened ------------------------------------------------------


def test_each_promotion_widens_the_column_and_keeps_every_value(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    parquet(tmp_path / "h1" / "a.parquet", {
        "id": pa.array([10], pa.int64()),
        "n": pa.array([2**40], pa.int64()),  # int -> long
        "f": pa.array([1.1], pa.float64()),  # float -> double
        "dec": pa.array([Decimal("123456789012.25")], pa.decimal128(14, 2)),  # decimal(10, 2) -> decimal(14, 2)
    })  # fmt: skip
    job_id = start(api, {"h1": "*.parquet"}, "evolve")
    run(api, job_id, tmp_path)
    completed(api, job_id)

    schema = api.catalog.load_table("demo.events").schema()
    assert [schema.find_field(c).field_type for c in ("n", "f", "dec")] == [
        LongType(),
        DoubleType(),
        DecimalType(14, 2),
    ]
    got = [(r["id"], r["n"], r["f"], r["dec"]) for r in table_rows(api)]
    assert got == [(0, 7, 1.5, Decimal("1.25")), (10, 2**40, 1.1, Decimal("123456789012.25"))]


def test_text_sources_widen_a_column_by_its_values(api: Api, tmp_path: Path) -> None:
    """CSV and JSON lines carry no types: a value beyond an int column's range, or with more digits than
    its decimal's precision, widens it in evolve (and fails the task in strict). The CSV meets its big
    values after several MiB: what the task wrote before goes on as int, the rest as long."""
    make_wide(api)
    (tmp_path / "h1").mkdir()
    csv = tmp_path / "h1" / "a.csv"
    many = range(100, 300_100)
    csv.write_text("id,n,dec\n" + "".join(f"{i},{i},1.5\n" for i in many) + "11,3000000000,123456789012.25\n")
    (tmp_path / "h2").mkdir()
    (tmp_path / "h2" / "b.jsonl").write_text('{"id": 20, "n": 5, "dec": 2.5}\n{"id": 21, "n": -5000000000}\n')
    strict = start(api, {"h1": "*.csv"})
    run(api, strict, tmp_path)
    reason = status(api, strict).failure_reason
    assert reason.startswith(f"task h1 failed: {csv}: column 'n' cannot be cast from string to int"), reason

    job_id = start(api, {"h1": "*.csv", "h2": "*.jsonl"}, "evolve")
    run(api, job_id, tmp_path)
    assert completed(api, job_id).files_written >= 3  # h1: int files, then long files; h2: one
    table = api.catalog.load_table("demo.events")
    schema = table.schema()
    assert (schema.find_field("n").field_type, schema.find_field("dec").field_type) == (
        LongType(),
        DecimalType(14, 2),
    )
    got = [(r["id"], r["n"], r["dec"]) for r in table_rows(api) if r["id"] < 100]
    assert got == [
        (0, 7, Decimal("1.25")), (11, 3_000_000_000, Decimal("123456789012.25")),
        (20, 5, Decimal("2.50")), (21, -5_000_000_000, None),
    ]  # fmt: skip
    n = table.scan(row_filter="id >= 100", selected_fields=("n",)).to_arrow().column("n")
    assert (len(n), pa.compute.sum(n).as_py()) == (len(many), sum(many))


@pytest.mark.parametrize(
    ("column", "values", "source_type", "table_type"),
    [
        ("n", pa.array([1.5]), "double", "int"),
        ("dec", pa.array([Decimal("1.2345")], pa.decimal128(10, 4)), "decimal(10, 4)", "decimal(10, 2)"),
        ("f", pa.array([Decimal("1.5")], pa.decimal128(5, 1)), "decimal(5, 1)", "float"),
    ],
)
def test_a_narrowing_is_refused_naming_the_column_and_both_types(
    api: Api, tmp_path: Path, column: str, values: pa.Array, source_type: str, table_type: str
) -> None:
    table = make_wide(api)
    before = files_under(table)
    path = parquet(tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), column: values})
    job_id = start(api, {"h1": "*.parquet"}, "evolve")
    run(api, job_id, tmp_path)
    s = status(api, job_id)
    assert common_pb2.JobState.Name(s.state) == "FAILED"
    assert s.failure_reason == (
        f"task h1 failed: {path}: column '{column}' is {source_type} in the source but {table_type} in the table, "
        f"and Iceberg cannot change {table_type} to {source_type} (it widens int to long, float to double, "
        "a decimal's precision up at the same scale)"
    )
    assert files_under(api.catalog.load_table("demo.events")) == before


def test_a_new_column_met_with_two_types_that_cannot_be_reconciled_fails(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    parquet(
        tmp_path / "h1" / "a.parquet", {"id": pa.array([10], pa.int64()), "score": pa.array([1], pa.int64())}
    )
    path = parquet(tmp_path / "h2" / "b.parquet", {"id": pa.array([20], pa.int64()), "score": ["high"]})
    job_id = start(api, {"h1": "*.parquet", "h2": "*.parquet"}, "evolve")
    run(api, job_id, tmp_path, order=["h1", "h2"])
    s = status(api, job_id)
    assert common_pb2.JobState.Name(s.state) == "FAILED"
    assert s.failure_reason.startswith(
        f"task h2 failed: {path}: column 'score' is string here, but the job added it as long (reserved by the task "
        "that met it first), and Iceberg cannot change long to string"
    ), s.failure_reason


def test_a_json_key_first_met_after_discovery_is_refused_in_evolve(api: Api, tmp_path: Path) -> None:
    make_wide(api)
    (tmp_path / "h1").mkdir()
    path = tmp_path / "h1" / "a.jsonl"
    path.write_text("".join(f'{{"id": {i}, "early": "e"}}\n' for i in range(1, 150_000)) + '{"id": 0, "late": 1}\n')
    job_id = start(api, {"h1": "*.jsonl"}, "evolve")
    run(api, job_id, tmp_path)
    assert status(api, job_id).failure_reason == (
        f"task h1 failed: {path}: the table has no column(s) 'late', and the task did not find them when it "
        "discovered the file's columns (a JSON-lines file's are found in its first 4 MiB); nothing was added: "
        "put a line holding every key first"
    )


