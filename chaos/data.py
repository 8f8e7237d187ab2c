"""The chaos table, its source files and reading it back (rows, distinct ids, snapshots, leftover files)."""

from __future__ import annotations

import gzip
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
from pyiceberg.catalog import Catalog
from pyiceberg.io.pyarrow import PyArrowFileIO, schema_to_pyarrow
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform

from tests.support.tables import SCHEMA  # the one test table schema (tests, bench and chaos)

ARROW_SCHEMA = schema_to_pyarrow(SCHEMA)  # what a plain pyiceberg append must be given (id not null)
BY_CATEGORY = PartitionSpec(
    PartitionField(source_id=3, field_id=1000, transform=IdentityTransform(), name="category")
)
CATEGORIES = ("a", "b", "c")
JOB_ID_KEY = "floe.job-id"
BASE_TS_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00


def make_table(catalog: Catalog, identifier: str, properties: dict[str, str] | None = None) -> Table:
    """A table partitioned by category (three partitions), so every task writes several files."""
    return catalog.create_table(
        identifier, schema=SCHEMA, partition_spec=BY_CATEGORY, properties=properties or {}
    )


def arrow_rows(start: int, count: int) -> pa.Table:
    """Rows ``start..start+count-1`` (vectorised: millions of rows in about a second)."""
    ids = pa.array(range(start, start + count), pa.int64())
    bucket = pc.subtract(ids, pc.multiply(pc.divide(ids, len(CATEGORIES)), len(CATEGORIES)))
    return pa.table(
        {
            "id": ids,
            "name": pc.binary_join_element_wise("name-", pc.cast(ids, pa.string()), ""),
            "category": pc.take(pa.array(CATEGORIES, pa.string()), bucket),
            "ts": pc.cast(pc.add(pc.multiply(ids, 1_000_000), BASE_TS_US), pa.timestamp("us")),
            "amount": pc.multiply(pc.cast(ids, pa.float64()), 1.5),
        }
    )


def write_csv(path: Path, start: int, count: int) -> Path:
    """``count`` rows with ids ``start..start+count-1`` as CSV (``.csv.gz`` names are gzipped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = arrow_rows(start, count)
    if path.name.endswith(".gz"):
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        path.write_bytes(gzip.compress(sink.getvalue().to_pybytes(), compresslevel=1))
    else:
        pacsv.write_csv(table, str(path))
    return path


def truncate_file(path: Path, keep_fraction: float = 0.5) -> Path:
    """Cut a file short (a partial copy, a full disk): a gzip stream then ends mid-member."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return path


# --------------------------------------------------------------------------------------------
# reading the table back
# --------------------------------------------------------------------------------------------


@dataclass
class TableReport:
    rows: int
    distinct_ids: int
    duplicates: int
    missing: int  # expected ids not found
    unexpected: int  # ids found that nobody wrote
    snapshots_by_job: dict[str, int]  # floe.job-id -> snapshots carrying it
    other_snapshots: int  # snapshots without a floe.job-id (other writers)
    data_files: int  # data files referenced by any snapshot
    leftover_files: list[str] = field(default_factory=list)  # stored, referenced by no snapshot
    leftover_manifests: list[str] = field(default_factory=list)  # manifests/lists referenced by no snapshot

    def describe(self) -> str:
        return (
            f"rows={self.rows} distinct={self.distinct_ids} duplicates={self.duplicates} "
            f"missing={self.missing} unexpected={self.unexpected} snapshots_by_job={self.snapshots_by_job} "
            f"other_snapshots={self.other_snapshots} leftover_files={len(self.leftover_files)} "
            f"leftover_manifests={len(self.leftover_manifests)}"
        )


def file_key(location: str) -> str:
    """A file's location as its filesystem names it (``file:///a/b`` -> ``/a/b``, ``s3://b/k`` -> ``b/k``),
    so that what manifests reference and what a listing finds compare equal."""
    return PyArrowFileIO.parse_location(location)[2]


def _fs(table: Table, location: str) -> tuple[pafs.FileSystem, str]:
    io = table.io
    assert isinstance(io, PyArrowFileIO), type(io)
    scheme, netloc, path = PyArrowFileIO.parse_location(location, io.properties)
    return io.fs_by_scheme(scheme, netloc), path


def list_files(table: Table, under: str, suffix: str, recursive: bool = True) -> list[str]:
    """The files below ``<table location>/<under>`` whose names end with ``suffix`` (as :func:`file_key`),
    on local disk or in the object store alike."""
    fs, base = _fs(table, f"{table.location().rstrip('/')}/{under}")
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=recursive))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))


def file_exists(table: Table, key: str) -> bool:
    """Whether the file :func:`list_files` named ``key`` is still there."""
    fs, _ = _fs(table, table.location())
    return bool(fs.get_file_info(key).type == pafs.FileType.File)


def relative(table: Table, key: str) -> str:
    return key.removeprefix(file_key(table.location()).rstrip("/") + "/")


def read_back(table: Table, expected_ids: set[int] | None = None) -> TableReport:
    """Count every row of ``table`` and every file under its location."""
    table = table.catalog.load_table(table.name())
    ids: list[int] = []
    if table.metadata.current_snapshot() is not None:
        ids = table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist()
    counts = Counter(ids)
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    found = set(counts)
    expected = expected_ids if expected_ids is not None else found
    by_job: Counter[str] = Counter()
    others = 0
    referenced_files: set[str] = set()
    referenced_manifests: set[str] = set()
    for snap in table.metadata.snapshots:
        job = snap.summary.get(JOB_ID_KEY) if snap.summary is not None else None
        if job:
            by_job[job] += 1
        else:
            others += 1
        referenced_manifests.add(file_key(snap.manifest_list))
        for manifest in snap.manifests(table.io):
            referenced_manifests.add(file_key(manifest.manifest_path))
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                referenced_files.add(file_key(entry.data_file.file_path))
    on_disk = set(list_files(table, "data", ".parquet"))
    avro = set(list_files(table, "metadata", ".avro", recursive=False))
    return TableReport(
        rows=len(ids),
        distinct_ids=len(found),
        duplicates=duplicates,
        missing=len(expected - found),
        unexpected=len(found - expected),
        snapshots_by_job=dict(by_job),
        other_snapshots=others,
        data_files=len(referenced_files),
        leftover_files=sorted(on_disk - referenced_files),
        leftover_manifests=sorted(avro - referenced_manifests),
    )
