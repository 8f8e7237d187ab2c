"""app.tables: partition specs from text, and tables from a schema file or a sample source file."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.transforms import (
    BucketTransform,
    DayTransform,
    HourTransform,
    IdentityTransform,
    MonthTransform,
    TruncateTransform,
    YearTransform,
)
from pyiceberg.types import (
    DoubleType,
    LongType,
    NestedField,
    StringType,
    StructType,
    TimestampType,
)

from app.errors import AlreadyExists, InvalidArgument, SourceError
from app.tables import create_table, parse_partition_spec, schema_from_file, schema_from_sample
from tests.support.catalogs import CatalogHandle
from tests.support.tables import SCHEMA, read_ids, rows, write_csv, write_jsonl, write_parquet


def fields(text: str, schema: Schema = SCHEMA) -> list[tuple[int, int, object, str]]:
    spec = parse_partition_spec(text, schema)
    return [(f.source_id, f.field_id, f.transform, f.name) for f in spec.fields]


# --- parse_partition_spec -------------------------------------------------------------------------


def test_identity_by_bare_column_and_by_name() -> None:
    assert fields("category") == [(3, 1000, IdentityTransform(), "category")]
    assert fields("identity(category)") == [(3, 1000, IdentityTransform(), "category")]


def test_time_transforms() -> None:
    assert fields("day(ts)") == [(4, 1000, DayTransform(), "ts_day")]
    assert fields("hour(ts)") == [(4, 1000, HourTransform(), "ts_hour")]
    assert fields("month(ts)") == [(4, 1000, MonthTransform(), "ts_month")]
    assert fields("year(ts)") == [(4, 1000, YearTransform(), "ts_year")]


def test_bucket_and_truncate() -> None:
    assert fields("bucket[16](id)") == [(1, 1000, BucketTransform(16), "id_bucket")]
    assert fields("truncate[4](name)") == [(2, 1000, TruncateTransform(4), "name_truncate")]


def test_several_terms_get_consecutive_field_ids_and_tolerate_spaces() -> None:
    assert fields(" category , day( ts ) ,bucket[16](id) ") == [
        (3, 1000, IdentityTransform(), "category"),
        (4, 1001, DayTransform(), "ts_day"),
        (1, 1002, BucketTransform(16), "id_bucket"),
    ]


def test_empty_text_is_unpartitioned() -> None:
    assert parse_partition_spec("", SCHEMA).is_unpartitioned()
    assert parse_partition_spec("   ", SCHEMA).is_unpartitioned()


def test_nested_column() -> None:
    schema = Schema(
        NestedField(1, "id", LongType(), required=True),
        NestedField(
            2, "meta", StructType(NestedField(3, "region", StringType(), required=False)), required=False
        ),
    )
    assert fields("meta.region,truncate[2](meta.region)", schema) == [
        (3, 1000, IdentityTransform(), "meta_region"),
        (3, 1001, TruncateTransform(2), "meta_region_truncate"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "foo(ts)",
            "partition term 'foo(ts)': unknown transform 'foo' "
            "(identity, year, month, day, hour, bucket[N], truncate[W])",
        ),
        ("bucket(id)", "partition term 'bucket(id)': unknown transform 'bucket'"),
        ("truncate(name)", "partition term 'truncate(name)': unknown transform 'truncate'"),
        ("day[3](ts)", "partition term 'day[3](ts)': unknown transform 'day'"),
        ("DAY(ts)", "partition term 'DAY(ts)': unknown transform 'DAY'"),
    ],
)
def test_unknown_transform(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        parse_partition_spec(text, SCHEMA)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "partition term 'nope': the schema has no column 'nope'"),
        ("day(nope)", "partition term 'day(nope)': the schema has no column 'nope'"),
        ("category,bucket[8](uid)", "partition term 'bucket[8](uid)': the schema has no column 'uid'"),
    ],
)
def test_unknown_column(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{re.escape(message)}$"):
        parse_partition_spec(text, SCHEMA)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("day(name)", "partition term 'day(name)': day cannot apply to name (string)"),
        ("hour(amount)", "partition term 'hour(amount)': hour cannot apply to amount (double)"),
        ("year(id)", "partition term 'year(id)': year cannot apply to id (long)"),
        ("bucket[4](amount)", "partition term 'bucket[4](amount)': bucket cannot apply to amount (double)"),
        ("truncate[2](ts)", "partition term 'truncate[2](ts)': truncate cannot apply to ts (timestamp)"),
    ],
)
def test_transform_not_applicable_to_the_column_type(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{re.escape(message)}$"):
        parse_partition_spec(text, SCHEMA)


@pytest.mark.parametrize("text", ["a b", "day(ts", "day()", "(ts)", "bucket[x](id)", "day(ts),", "a;b"])
def test_malformed_terms(text: str) -> None:
    with pytest.raises(InvalidArgument, match="is not COLUMN or TRANSFORM\\(COLUMN\\)"):
        parse_partition_spec(text, SCHEMA)


@pytest.mark.parametrize("text", ["bucket[0](id)", "truncate[0](name)"])
def test_zero_bucket_count_or_truncate_width_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="must be at least 1|must be positive"):
        parse_partition_spec(text, SCHEMA)


@pytest.mark.parametrize("text", ["category,category", "day(ts),day(ts)", "category,identity(category)"])
def test_duplicate_partition_fields_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="twice|more than once|duplicate"):
        parse_partition_spec(text, SCHEMA)


# --- schema files ---------------------------------------------------------------------------------


def test_schema_from_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(SCHEMA.model_dump_json())
    assert schema_from_file(path) == SCHEMA


def test_schema_file_in_the_documented_minimal_form(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(
        json.dumps(
            {
                "type": "struct",
                "fields": [
                    {"id": 1, "name": "id", "type": "long", "required": True},
                    {"id": 2, "name": "ts", "type": "timestamptz", "required": False},
                ],
            }
        )
    )
    schema = schema_from_file(path)
    assert [f.name for f in schema.fields] == ["id", "ts"]
    assert schema.find_field("id").required


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not an Iceberg schema: Invalid JSON"),
        ("[]", "not an Iceberg schema: "),
        ('{"type": "struct", "fields": [{"id": 1, "name": "x"}]}', "not an Iceberg schema: "),
        (
            '{"type": "struct", "fields": [{"id": 1, "name": "x", "type": "varchar", "required": false}]}',
            "not an Iceberg schema: ",
        ),
        ("", "not an Iceberg schema: "),
    ],
)
def test_bad_schema_file_is_invalid_argument(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InvalidArgument, match=f"^{re.escape(f'{path}: {message}')}") as info:
        schema_from_file(path)
    assert type(info.value) is InvalidArgument


def test_missing_schema_file_is_invalid_argument(tmp_path: Path) -> None:
    path = tmp_path / "missing.json"
    with pytest.raises(InvalidArgument, match=f"^{re.escape(f'{path}: cannot be read: ')}"):
        schema_from_file(path)


# --- samples --------------------------------------------------------------------------------------


EXPECTED_SAMPLE_TYPES = {
    "id": LongType(),
    "name": StringType(),
    "category": StringType(),
    "ts": TimestampType(),
    "amount": DoubleType(),
}


def _types(schema: Schema) -> dict[str, object]:
    return {f.name: f.field_type for f in schema.fields}


@pytest.mark.parametrize(
    ("name", "writer"),
    [("s.csv", write_csv), ("s.jsonl", write_jsonl), ("s.parquet", write_parquet)],
)
def test_schema_from_sample(tmp_path: Path, name: str, writer: object) -> None:
    path = writer(tmp_path / name, rows(0, 20))  # type: ignore[operator]
    schema = schema_from_sample(path)
    assert _types(schema) == EXPECTED_SAMPLE_TYPES
    assert [f.field_id for f in schema.fields] == [1, 2, 3, 4, 5]  # fresh ids


def test_schema_from_gzip_csv_sample(tmp_path: Path) -> None:
    plain = write_csv(tmp_path / "s.csv", rows(0, 5))
    gz = tmp_path / "s.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert _types(schema_from_sample(gz)) == EXPECTED_SAMPLE_TYPES


def test_parquet_nanosecond_timestamps_become_microseconds(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "ns.parquet"
    pq.write_table(
        pa.table({"ts": pa.array([0], pa.timestamp("ns")), "tz": pa.array([0], pa.timestamp("ns", "UTC"))}),
        path,
    )
    types = _types(schema_from_sample(path))
    assert str(types["ts"]) == "timestamp" and str(types["tz"]) == "timestamptz"


def test_unsupported_sample_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("hello")
    with pytest.raises(SourceError, match=re.escape(f"{path}: unsupported source format")):
        schema_from_sample(path)


def test_missing_or_empty_sample_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=re.escape(f"{tmp_path / 'none.csv'}: cannot infer a schema: ")):
        schema_from_sample(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SourceError, match=re.escape(f"{tmp_path / 'empty.csv'}: cannot infer a schema: ")):
        schema_from_sample(tmp_path / "empty.csv")


# --- create_table ---------------------------------------------------------------------------------


def test_create_table_from_schema_file(tmp_path: Path, sqlite_catalog: CatalogHandle) -> None:
    path = tmp_path / "schema.json"
    path.write_text(SCHEMA.model_dump_json())
    table = create_table(
        sqlite_catalog.catalog,
        "fresh_ns.events",
        schema_file=str(path),
        partition_by="category,day(ts)",
        properties={"write.target-file-size-bytes": "1048576"},
    )
    assert table.name() == ("fresh_ns", "events")  # the namespace was created on the way
    assert table.schema() == SCHEMA
    assert [(f.name, f.transform) for f in table.spec().fields] == [
        ("category", IdentityTransform()),
        ("ts_day", DayTransform()),
    ]
    assert table.properties["write.target-file-size-bytes"] == "1048576"
    loaded = sqlite_catalog.catalog.load_table("fresh_ns.events")
    assert loaded.metadata.table_uuid == table.metadata.table_uuid


@pytest.mark.parametrize(
    ("name", "writer"),
    [("x.csv", write_csv), ("x.jsonl", write_jsonl), ("x.parquet", write_parquet)],
)
def test_create_table_from_sample_is_writable(
    tmp_path: Path, sqlite_catalog: CatalogHandle, name: str, writer: object
) -> None:
    sample = writer(tmp_path / name, rows(0, 30))  # type: ignore[operator]
    table = create_table(
        sqlite_catalog.catalog,
        sqlite_catalog.identifier(f"from_{name.replace('.', '_')}"),
        sample=str(sample),
        partition_by="category,day(ts),bucket[16](id),truncate[4](name)",
    )
    assert _types(table.schema()) == EXPECTED_SAMPLE_TYPES
    assert [f.name for f in table.spec().fields] == ["category", "ts_day", "id_bucket", "name_truncate"]
    table.append(pa.Table.from_pylist(rows(0, 30), schema=table.schema().as_arrow()))
    assert read_ids(table) == list(range(30))


def test_create_table_in_an_existing_namespace(tmp_path: Path, sqlite_catalog: CatalogHandle) -> None:
    sample = write_csv(tmp_path / "x.csv", rows(0, 3))
    table = create_table(sqlite_catalog.catalog, "ns.t", sample=str(sample))
    assert table.spec().is_unpartitioned()


def test_existing_table_is_already_exists(tmp_path: Path, sqlite_catalog: CatalogHandle) -> None:
    sample = write_csv(tmp_path / "x.csv", rows(0, 3))
    first = create_table(sqlite_catalog.catalog, "ns.dup", sample=str(sample))
    with pytest.raises(AlreadyExists, match="^table ns.dup already exists$") as info:
        create_table(sqlite_catalog.catalog, "ns.dup", sample=str(sample), partition_by="category")
    assert info.value.grpc_code == "ALREADY_EXISTS"
    # the first table is untouched
    assert sqlite_catalog.catalog.load_table("ns.dup").metadata.table_uuid == first.metadata.table_uuid


def test_bad_schema_file_creates_nothing(tmp_path: Path, sqlite_catalog: CatalogHandle) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"type": "struct", "fields": "nope"}')
    with pytest.raises(InvalidArgument, match=re.escape(f"{path}: not an Iceberg schema")):
        create_table(sqlite_catalog.catalog, "other_ns.t", schema_file=str(path))
    assert ("other_ns",) not in sqlite_catalog.catalog.list_namespaces()


def test_bad_partition_spec_creates_nothing(tmp_path: Path, sqlite_catalog: CatalogHandle) -> None:
    sample = write_csv(tmp_path / "x.csv", rows(0, 3))
    with pytest.raises(InvalidArgument, match="day cannot apply to name"):
        create_table(sqlite_catalog.catalog, "other_ns.t", sample=str(sample), partition_by="day(name)")
    assert ("other_ns",) not in sqlite_catalog.catalog.list_namespaces()


def test_partition_name_clashing_with_a_column_is_invalid_argument(
    tmp_path: Path, sqlite_catalog: CatalogHandle
) -> None:
    sample = tmp_path / "x.csv"
    sample.write_text("ts,ts_day\n2024-01-01T00:00:00,5\n")
    with pytest.raises(InvalidArgument, match="ts_day"):
        create_table(sqlite_catalog.catalog, "ns.clash", sample=str(sample), partition_by="day(ts)")


@pytest.mark.parametrize("identifier", ["plain", ".t", "ns."])
def test_identifier_needs_a_namespace(tmp_path: Path, sqlite_catalog: CatalogHandle, identifier: str) -> None:
    sample = write_csv(tmp_path / "x.csv", rows(0, 3))
    with pytest.raises(InvalidArgument, match=re.escape(f"table {identifier!r} must be NAMESPACE.TABLE")):
        create_table(sqlite_catalog.catalog, identifier, sample=str(sample))
