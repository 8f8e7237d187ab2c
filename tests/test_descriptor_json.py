"""A task's manifest description travels as JSON: built field by field (not dataclasses.asdict, which
cost measurably per task), it must say exactly what asdict said, and read back to the same description."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict

from app.iceberg.descriptor import ManifestDescriptor, PartitionMetrics
from app.iceberg.schema_change import ROOT, NewField, SchemaChange


def _descriptor() -> ManifestDescriptor:
    return ManifestDescriptor(
        task_id="t-1",
        snapshot_id=-(2**63),
        commit_uuid="c0ffee",
        manifest_path="s3://b/t/metadata/x-m0.avro",
        manifest_length=4321,
        partition_spec_id=3,
        added_files_count=2,
        added_rows_count=7,
        added_bytes=2048,
        partitions=[
            {
                "contains_null": False,
                "contains_nan": None,
                "lower_bound": base64.b64encode(b"a").decode(),
                "upper_bound": None,
            },
            {"contains_null": True, "contains_nan": False, "lower_bound": None, "upper_bound": None},
        ],
        data_files=["s3://b/t/data/category=a/1.parquet", "s3://b/t/data/category=b/2.parquet"],
        partition_metrics={
            "category=a": PartitionMetrics(1, 3, 1000),
            "category=b": PartitionMetrics(1, 4, 1048),
        },
        schema_change=SchemaChange((NewField(9, ROOT, "extra", "long"),), ((2, "double"),)),
    )


def test_the_description_says_what_asdict_said_and_reads_back() -> None:
    d = _descriptor()
    assert d.to_dict() == {**asdict(d), "schema_change": d.schema_change.to_dict()}
    assert json.loads(d.to_json()) == json.loads(
        json.dumps({**asdict(d), "schema_change": d.schema_change.to_dict()})
    )
    assert ManifestDescriptor.from_json(d.to_json()) == d


def test_the_description_is_a_copy() -> None:
    d = _descriptor()
    out = d.to_dict()
    out["partitions"][0]["contains_null"] = True
    out["data_files"].append("x")
    assert d.partitions[0]["contains_null"] is False and len(d.data_files) == 2
