"""Checking what a contender wrote (row counts from the snapshot, the manifests and the Parquet footers),
and dropping a table with its files."""

from __future__ import annotations

import shutil
import urllib.parse
from pathlib import Path
from typing import Any


class CheckFailed(AssertionError):
    pass


def _local(uri: str) -> Path:
    return Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path)) if uri.startswith("file:") else Path(uri)


def footer_rows(paths: list[str]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(str(_local(p))).num_rows for p in paths)


def check_table(catalog: Any, identifier: str, expected_rows: int) -> int:
    """Row count from the snapshot summary and from every data file's footer; returns the file count."""
    table = catalog.load_table(identifier)
    snapshot = table.current_snapshot()
    if snapshot is None:
        raise CheckFailed(f"{identifier}: no snapshot was committed")
    total = int((snapshot.summary.additional_properties if snapshot.summary else {}).get("total-records", -1))
    tasks = table.scan().plan_files()
    paths = [t.file.file_path for t in tasks]
    in_metadata = sum(t.file.record_count for t in tasks)
    in_files = footer_rows(paths)
    if not (total == in_metadata == in_files == expected_rows):
        raise CheckFailed(
            f"{identifier}: expected {expected_rows} rows; snapshot summary says {total}, "
            f"manifests {in_metadata}, Parquet footers {in_files}"
        )
    return len(paths)


def drop_table(catalog: Any, identifier: str) -> None:
    try:
        table = catalog.load_table(identifier)
    except Exception:  # noqa: BLE001 - nothing to drop
        return
    location = _local(table.location())
    catalog.drop_table(identifier)
    shutil.rmtree(location, ignore_errors=True)
