"""Synthetic source data and the benchmark tables: one schema, one spec, zstd, for every contender.

Rows: ``id`` long, ``user`` string (varying length), ``category`` string (8 values), ``ts``
timestamp spread over 3 whole days, ``amount`` double, ``qty`` int, ``note`` string (varying
length). Generated with pyarrow.compute alone (seeded, so every run makes the same bytes).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

CATEGORIES = ("books", "games", "music", "tools", "garden", "kitchen", "outdoor", "electronics")
DAYS = 3
BASE = dt.datetime(2026, 11, 20)
BYTES_PER_ROW_ESTIMATE = 124  # CSV bytes per row of this generator, measured; sizes the files
ROWS_PER_BATCH = 250_000

# The Arrow schema every contender reads the CSV into (the table's schema, field for field).
ARROW_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("user", pa.string()),
        ("category", pa.string()),
        ("ts", pa.timestamp("us")),
        ("amount", pa.float64()),
        ("qty", pa.int32()),
        ("note", pa.string()),
    ]
)
PARTITION_BY = "category,day(ts)"
TABLE_PROPERTIES = {
    "write.parquet.compression-codec": "zstd",
    "write.target-file-size-bytes": str(512 * 1024 * 1024),
}
# The Parquet settings pyiceberg derives from those properties (and Floe through it); the floor uses them too.
PARQUET_KWARGS = {
    "compression": "zstd",
    "data_page_size": 1024 * 1024,
    "dictionary_pagesize_limit": 2 * 1024 * 1024,
    "write_batch_size": 20_000,
}
ROW_GROUP_ROWS = 1_048_576

_WORDS = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua", "enim", "ad", "minim", "veniam", "quis", "nostrud", "exercitation", "ullamco", "laboris", "nisi", "aliquip", "ex", "ea", "commodo", "consequat", "duis", "aute", "irure", "in", "reprehenderit", "voluptate", "velit", "esse", "cillum", "fugiat", "nulla"]


@dataclass
class Dataset:
    """What was generated: the files of each host (CSV and matching Parquet) and their facts."""

    root: str
    hosts: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # host -> {"csv": [...], "parquet": [...]}
    rows: int = 0
    csv_bytes: int = 0
    parquet_bytes: int = 0
    partitions: int = 0

    @property
    def source_mb(self) -> float:
        return self.csv_bytes / 1e6

    def files(self, fmt: str = "csv") -> list[str]:
        return [p for host in sorted(self.hosts) for p in self.hosts[host][fmt]]

    def save(self) -> None:
        Path(self.root, "dataset.json").write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, root: Path) -> Dataset | None:
        try:
            return cls(**json.loads((root / "dataset.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _pool(n: int, seed: int, lo: int, hi: int, prefix: str = "") -> pa.Array:
    """``n`` distinct strings: ``prefix`` + a number + ``lo``..``hi`` letters, or ``lo``..``hi`` random words."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        count = rng.randint(lo, hi)
        if prefix:
            out.append(f"{prefix}{i:06d}" + "".join(rng.choices(string.ascii_lowercase, k=count)))
        else:
            out.append(" ".join(rng.choices(_WORDS, k=count)) + f" #{i}")
    return pa.array(out, pa.string())


_USERS = None
_NOTES = None


def _pools() -> tuple[pa.Array, pa.Array]:
    global _USERS, _NOTES
    if _USERS is None or _NOTES is None:
        _USERS = _pool(50_000, 11, 0, 16, prefix="user-")
        _NOTES = _pool(200_000, 12, 0, 14)
    return _USERS, _NOTES


def _indices(n: int, size: int, seed: int) -> pa.Array:
    return pc.cast(pc.floor(pc.multiply(pc.random(n, initializer=seed), size)), pa.int32())


def make_batch(start: int, n: int, seed: int) -> pa.Table:
    """Rows ``start``..``start+n-1``; the same arguments always give the same rows."""
    users, notes = _pools()
    cats = pa.array(CATEGORIES, pa.string())
    base_s = int(BASE.replace(tzinfo=dt.timezone.utc).timestamp())
    seconds = pc.cast(
        pc.add(pc.floor(pc.multiply(pc.random(n, initializer=seed * 7 + 3), DAYS * 86400)), base_s), pa.int64()
    )
    return pa.table(
        {
            "id": pa.array(range(start, start + n), pa.int64()),
            "user": users.take(_indices(n, len(users), seed * 7 + 1)),
            "category": cats.take(_indices(n, len(cats), seed * 7 + 2)),
            "ts": pc.cast(seconds.cast(pa.timestamp("s")), pa.timestamp("us")),
            "amount": pc.round(pc.multiply(pc.random(n, initializer=seed * 7 + 4), 1000.0), 2),
            "qty": pc.cast(pc.add(pc.floor(pc.multiply(pc.random(n, initializer=seed * 7 + 5), 100)), 1), pa.int32()),
            "note": notes.take(_indices(n, len(notes), seed * 7 + 6)),
        },
        schema=ARROW_SCHEMA,
    )


def _csv_table(table: pa.Table) -> pa.Table:
    # second precision in the text (the values have no fractions): "2026-11-20 13:45:12"
    return table.set_column(3, "ts", table.column("ts").cast(pa.timestamp("s")))


def generate(root: Path, host_dirs: dict[str, Path], csv_mb: float, files_per_host: int) -> Dataset:
    """About ``csv_mb`` MB of CSV in ``files_per_host`` files per host, and the same rows as Parquet.

    CSV files go to ``<host dir>/csv/``, Parquet to ``<host dir>/parquet/``. Reuses what an earlier call
    with the same arguments left (``root/dataset.json``).
    """
    root.mkdir(parents=True, exist_ok=True)
    key = {"csv_mb": csv_mb, "files_per_host": files_per_host, "hosts": {h: str(d) for h, d in host_dirs.items()}}
    marker = root / "dataset.key"
    previous = Dataset.load(root)
    if (
        previous is not None
        and marker.exists()
        and json.loads(marker.read_text()) == key
        and all(os.path.exists(p) for p in previous.files("csv") + previous.files("parquet"))
    ):
        return previous
    n_files = files_per_host * len(host_dirs)
    rows_per_file = max(1, int(csv_mb * 1e6 / BYTES_PER_ROW_ESTIMATE / n_files))
    ds = Dataset(root=str(root))
    seen: set[tuple[str, int]] = set()
    start = 0
    index = 0
    for host, base in sorted(host_dirs.items()):
        (base / "csv").mkdir(parents=True, exist_ok=True)
        (base / "parquet").mkdir(parents=True, exist_ok=True)
        ds.hosts[host] = {"csv": [], "parquet": []}
        for _ in range(files_per_host):
            csv_path = base / "csv" / f"part-{index:03d}.csv"
            pq_path = base / "parquet" / f"part-{index:03d}.parquet"
            with pa.OSFile(str(csv_path), "wb") as sink:
                csv_writer = None
                pq_writer = pq.ParquetWriter(str(pq_path), ARROW_SCHEMA, compression="zstd")
                done = 0
                while done < rows_per_file:
                    n = min(ROWS_PER_BATCH, rows_per_file - done)
                    batch = make_batch(start + done, n, seed=index * 1000 + done // ROWS_PER_BATCH + 1)
                    text = _csv_table(batch)
                    if csv_writer is None:
                        csv_writer = pacsv.CSVWriter(sink, text.schema)
                    csv_writer.write_table(text)
                    pq_writer.write_table(batch)
                    days = pc.cast(pc.divide(pc.cast(batch.column("ts"), pa.int64()), 86_400_000_000), pa.int64())
                    pairs = pa.table({"c": batch.column("category"), "d": days}).group_by(["c", "d"]).aggregate([])
                    seen.update(zip(pairs.column("c").to_pylist(), pairs.column("d").to_pylist(), strict=True))
                    done += n
                assert csv_writer is not None
                csv_writer.close()
                pq_writer.close()
            start += rows_per_file
            index += 1
            ds.hosts[host]["csv"].append(str(csv_path))
            ds.hosts[host]["parquet"].append(str(pq_path))
            ds.csv_bytes += csv_path.stat().st_size
            ds.parquet_bytes += pq_path.stat().st_size
    ds.rows = start
    ds.partitions = len(seen)
    ds.save()
    marker.write_text(json.dumps(key))
    return ds


def big_csv(path: Path, dataset: Dataset, min_bytes: int) -> int:
    """One CSV of at least ``min_bytes``: the dataset's CSV bodies repeated under one header."""
    if path.exists() and path.stat().st_size >= min_bytes:
        return path.stat().st_size
    sources = dataset.files("csv")
    with open(sources[0], "rb") as first:
        header = first.readline()
    written = 0
    with path.open("wb") as out:
        out.write(header)
        written += len(header)
        while written < min_bytes:
            for src in sources:
                with open(src, "rb") as fh:
                    fh.readline()
                    while chunk := fh.read(16 << 20):
                        out.write(chunk)
                        written += len(chunk)
                if written >= min_bytes:
                    break
    return path.stat().st_size


def csv_read_options() -> tuple[pacsv.ReadOptions, pacsv.ConvertOptions]:
    """How the floor and pyiceberg contenders read the CSV: the table's types, nothing inferred."""
    return (
        pacsv.ReadOptions(use_threads=True),
        pacsv.ConvertOptions(column_types={f.name: f.type for f in ARROW_SCHEMA}),
    )


# --- tables --------------------------------------------------------------------------------------


def iceberg_schema():  # type: ignore[no-untyped-def]
    from pyiceberg.schema import Schema
    from pyiceberg.types import DoubleType, IntegerType, LongType, NestedField, StringType, TimestampType

    return Schema(
        NestedField(1, "id", LongType(), required=False),
        NestedField(2, "user", StringType(), required=False),
        NestedField(3, "category", StringType(), required=False),
        NestedField(4, "ts", TimestampType(), required=False),
        NestedField(5, "amount", DoubleType(), required=False),
        NestedField(6, "qty", IntegerType(), required=False),
        NestedField(7, "note", StringType(), required=False),
    )


def create_table(catalog, identifier: str, partitioned: bool, properties: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """A fresh table (dropped first if it exists): the bench schema, its spec, zstd."""
    import contextlib

    from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError

    from app.tables import parse_partition_spec

    namespace = identifier.rsplit(".", 1)[0]
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(namespace)
    with contextlib.suppress(NoSuchTableError):
        catalog.drop_table(identifier)
    schema = iceberg_schema()
    spec = parse_partition_spec(PARTITION_BY if partitioned else "", schema)
    return catalog.create_table(
        identifier, schema=schema, partition_spec=spec, properties={**TABLE_PROPERTIES, **(properties or {})}
    )
