"""What is in the S3 bucket, as the object store itself lists it (tests on SeaweedFS's S3 + REST catalog)."""

from __future__ import annotations

import pyarrow.fs
from pyiceberg.table import Table

from tests.support.seaweedfs import SeaweedFS


def s3(server: SeaweedFS, secret_key: str | None = None) -> pyarrow.fs.S3FileSystem:
    return pyarrow.fs.S3FileSystem(
        access_key=server.access_key,
        secret_key=secret_key or server.secret_key,
        endpoint_override=server.s3_endpoint,
        region=server.REGION,
    )


def objects(server: SeaweedFS, location: str) -> set[str]:
    """Every object under the s3:// ``location``, as s3:// URIs."""
    assert location.startswith("s3://"), location
    infos = s3(server).get_file_info(pyarrow.fs.FileSelector(location.removeprefix("s3://"), recursive=True))
    return {f"s3://{info.path}" for info in infos if info.type == pyarrow.fs.FileType.File}


def table_files(table: Table) -> tuple[set[str], set[str], str | None]:
    """(data files, manifest files, manifest list) of the current snapshot."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return set(), set(), None
    manifests = snapshot.manifests(table.io)
    data = {entry.data_file.file_path for m in manifests for entry in m.fetch_manifest_entry(table.io)}
    return data, {m.manifest_path for m in manifests}, snapshot.manifest_list


def assert_all_on_s3(server: SeaweedFS, table: Table) -> None:
    """The table's metadata, manifest list, manifests and data files are objects in the S3 bucket."""
    prefix = f"{server.warehouse}/"
    data, manifests, manifest_list = table_files(table)
    assert data and manifests and manifest_list
    paths = {table.metadata_location, manifest_list, *manifests, *data}
    assert all(p.startswith(prefix) for p in paths), sorted(paths)
    assert table.location().startswith(prefix)
    missing = paths - objects(server, table.location())
    assert not missing, f"referenced but not in the bucket: {sorted(missing)}"


def assert_only_the_snapshot_in_bucket(server: SeaweedFS, table: Table) -> None:
    """:func:`assert_all_on_s3`, and no orphans: the bucket holds exactly the current snapshot's data
    files, manifests and manifest list under the table's location."""
    assert_all_on_s3(server, table)
    data, manifests, manifest_list = table_files(table)
    found = objects(server, table.location())
    assert {o for o in found if o.endswith(".parquet")} == data
    assert {o for o in found if o.endswith(".avro")} == {*manifests, manifest_list}
