"""Commit and scan-planning cost against the number of task manifests, through ``app.iceberg`` directly.

For each task count N: N tiny task manifests are written with ``workers.conversion.write_task_manifest``
(off the clock, by a pool of processes), then ``commit_distributed_snapshot`` is timed on a table
with manifest merging off and on another with it on; pyiceberg's fast append of the same data files
(one ``append_data_file`` per file, one commit, table load included as in Floe's commit) is timed on
a third table.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from bench.data import BASE, CATEGORIES, DAYS, create_table, make_batch

MERGE = "commit.manifest-merge.enabled"
TINY_ROWS = 5

# --- the pool that writes task manifests (one catalog per process) --------------------------------

_pool_catalog: Any = None


def _init_pool(catalog_props: dict[str, str]) -> None:
    global _pool_catalog
    from pyiceberg.catalog import load_catalog

    props = dict(catalog_props)
    _pool_catalog = load_catalog(props.pop("name"), **props)


def _write_manifests(identifier: str, snapshot: dict[str, Any], paths: list[str], ids: list[str]) -> list[str]:
    from app.iceberg import DistributedSnapshot
    from workers.conversion import write_task_manifest

    table = _pool_catalog.load_table(identifier)
    snap = DistributedSnapshot.from_dict(snapshot)
    out = []
    for task_id in ids:
        descriptor = write_task_manifest(snap, table, paths, task_id)
        assert descriptor is not None
        out.append(descriptor.to_json())
    return out


@dataclass
class MetadataBench:
    catalog: Any
    catalog_props: dict[str, str]
    workdir: Path
    workers: int = 2
    namespace: str = "bench_meta"
    _pool: ProcessPoolExecutor | None = field(default=None, init=False)

    def __enter__(self) -> MetadataBench:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=get_context("spawn"), initializer=_init_pool, initargs=(self.catalog_props,)
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def tiny_source(self, name: str, rows: int = TINY_ROWS, seed: int = 1) -> Path:
        path = self.workdir / name
        if not path.exists():
            pacsv.write_csv(make_batch(0, rows, seed), path)
        return path

    def wide_source(self, partitions: int = 10) -> Path:
        """``partitions`` rows, each in its own (category, day) partition: one task writes that many files."""
        path = self.workdir / f"wide-{partitions}.csv"
        if not path.exists():
            batch = make_batch(0, partitions, 5)
            cats = [CATEGORIES[i % len(CATEGORIES)] for i in range(partitions)]
            days = [BASE + dt.timedelta(days=i % DAYS, hours=1) for i in range(partitions)]
            batch = batch.set_column(2, "category", pa.array(cats, pa.string()))
            batch = batch.set_column(3, "ts", pa.array(days, pa.timestamp("us")))
            pacsv.write_csv(batch, path)
        return path

    def write_job(self, table: Any, n: int, paths: list[str]) -> tuple[Any, list[Any]]:
        """Reserve a snapshot on ``table`` and write ``n`` task manifests for it (off the clock)."""
        from app.iceberg import ManifestDescriptor, begin_distributed_snapshot

        assert self._pool is not None
        snapshot = begin_distributed_snapshot(table)
        ident = ".".join(table.name())
        ids = [f"task-{i:05d}" for i in range(n)]
        chunk = max(1, -(-n // (self.workers * 4)))
        futures = [
            self._pool.submit(_write_manifests, ident, snapshot.to_dict(), paths, ids[i : i + chunk])
            for i in range(0, n, chunk)
        ]
        descriptors = [ManifestDescriptor.from_json(text) for f in futures for text in f.result()]
        return snapshot, descriptors

    def commit_round(
        self, n: int, partitioned: bool = False, source: Path | None = None, plan: bool = False
    ) -> dict[str, Any]:
        """Commit ``n`` task manifests with merging off, then on, and pyiceberg's fast append of the same files.

        The manifests are written once, for a snapshot reserved on the merging-off table, and committed
        to both tables: the merging-on table is reserved with the same snapshot id and commit uuid
        (ids are per table), so both commits get byte-identical manifests. The merging-on commit
        deletes the worker manifests it merged, which the first table still references, so
        everything measured on the first table (its commit, its planning, its data files) is
        measured before it. With ``plan``, ``plan_files()`` is timed on all three tables.
        """
        from dataclasses import replace

        from app.iceberg import begin_distributed_snapshot, commit_distributed_snapshot
        from app.iceberg.files import delete_quietly

        src = str(source or self.tiny_source("tiny.csv"))
        kind = "p" if partitioned else "u"
        names = {
            mode: f"{self.namespace}.commit_{n}_{kind}_{mode}" for mode in ("plain", "merged", "pyiceberg")
        }
        plain = create_table(self.catalog, names["plain"], partitioned, {MERGE: "false"})
        merged = create_table(self.catalog, names["merged"], partitioned, {MERGE: "true"})
        create_table(self.catalog, names["pyiceberg"], partitioned)
        out: dict[str, Any] = {"tasks": n, "tables": names}

        snapshot, descriptors = self.write_job(plain, n, [src])
        out["data_files"] = sum(len(d.data_files) for d in descriptors)
        started = time.perf_counter()
        commit_distributed_snapshot(plain, snapshot, descriptors, {"floe.job-id": f"bench-{n}"})
        out["plain_ms"] = (time.perf_counter() - started) * 1000
        plain = self.catalog.load_table(names["plain"])
        out["plain_manifests"] = len(plain.current_snapshot().manifests(plain.io))
        data_files = [
            entry.data_file for d in descriptors for entry in d.to_manifest_file().fetch_manifest_entry(plain.io)
        ]
        if plan:
            out["plan_plain_ms"], _ = self.plan_ms(names["plain"])

        reserved = begin_distributed_snapshot(merged)
        twin = replace(
            snapshot,
            table_uuid=reserved.table_uuid,
            table_identifier=reserved.table_identifier,
            metadata_location=reserved.metadata_location,
        )
        # Timed as the coordinator runs it: until the snapshot is on main (the job is COMPLETED then);
        # the merged-away worker manifests are deleted after that, timed on their own.
        started = time.perf_counter()
        outcome = commit_distributed_snapshot(merged, twin, descriptors, {"floe.job-id": f"bench-{n}"})
        out["merged_ms"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        delete_quietly(merged.io, list(outcome.unreferenced))
        out["merged_cleanup_ms"] = (time.perf_counter() - started) * 1000
        merged = self.catalog.load_table(names["merged"])
        out["merged_manifests"] = len(merged.current_snapshot().manifests(merged.io))
        if plan:
            out["plan_merged_ms"], out["plan_merged_files"] = self.plan_ms(names["merged"])

        started = time.perf_counter()
        table = self.catalog.load_table(names["pyiceberg"])
        with table.transaction() as tx, tx.update_snapshot().fast_append() as append:
            for data_file in data_files:
                append.append_data_file(data_file)
        out["pyiceberg_ms"] = (time.perf_counter() - started) * 1000
        if plan:
            out["plan_single_append_ms"], out["plan_single_append_files"] = self.plan_ms(names["pyiceberg"])
        return out

    def plan_ms(self, identifier: str, repeats: int = 5) -> tuple[float, int]:
        """Median ``plan_files()`` time on a freshly loaded table (no cached manifests), and the file count."""
        times = []
        files = 0
        for _ in range(repeats):
            table = self.catalog.load_table(identifier)
            started = time.perf_counter()
            files = len(table.scan().plan_files())
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times), files


def describe(result: dict[str, Any]) -> str:
    return json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()})
