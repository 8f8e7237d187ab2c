"""A task's manifest description travels as JSON: built field by field (not dataclasses.asdict, which
cost measurably per task), it must say exactly what asdict said, and read back to the same description."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, replace

import pytest

from app.errors import InvalidArgument
from app.iceberg.descriptor import ManifestDescriptor, PartitionMetrics
from app.iceberg.inline_manifest import InlineManifest, header_digest
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


def _as_dict(d: ManifestDescriptor) -> dict[str, object]:
    out = {**asdict(d), "schema_change": d.schema_change.to_dict()}
    del out["inline"]  # only an inline manifest's description has it
    return out


def test_the_description_says_what_asdict_said_and_reads_back() -> None:
    d = _descriptor()
    assert d.to_dict() == _as_dict(d)
    assert json.loads(d.to_json()) == json.loads(json.dumps(_as_dict(d)))
    assert ManifestDescriptor.from_json(d.to_json()) == d


def test_an_inline_manifest_travels_without_its_header() -> None:
    header = b"Obj\x01 header"
    d = replace(_descriptor(), inline=InlineManifest(header_digest(header), b"\x00sync and blocks\xff", header))
    data = json.loads(d.to_json())
    assert data["inline"] == {"header": header_digest(header), "body": base64.b64encode(b"\x00sync and blocks\xff").decode()}
    back = ManifestDescriptor.from_json(d.to_json())
    assert back.inline == InlineManifest(header_digest(header), b"\x00sync and blocks\xff")  # no header: stored apart
    assert back.with_header_from({header_digest(header): header}) == d
    assert back.with_header_from({}) == back


@pytest.mark.parametrize(
    "inline, message",
    [
        ("x", "inline manifest 'x' is not an object"),
        ({"body": "AA=="}, "'header'"),
        ({"header": "abc", "body": "AA=="}, "inline manifest header digest 'abc' is not 32 hex digits"),
        ({"header": "g" * 32, "body": "AA=="}, "is not 32 hex digits"),
        ({"header": "a" * 32, "body": ""}, "inline manifest body is not base64 text"),
        ({"header": "a" * 32, "body": "not base64!"}, "not a valid manifest description"),
    ],
)
def test_a_wrong_inline_manifest_is_refused(inline: object, message: str) -> None:
    data = {**_descriptor().to_dict(), "inline": inline}
    with pytest.raises(InvalidArgument) as info:
        ManifestDescriptor.from_dict(data)
    assert message in str(info.value)


def test_the_description_is_a_copy() -> None:
    d = _descriptor()
    out = d.to_dict()
    out["partitions"][0]["contains_null"] = True
    out["data_files"].append("x")
    assert d.partitions[0]["contains_null"] is False and len(d.data_files) == 2
