"""The fault matrix's table cases (registered into :data:`chaos.cases.CASES`): what else meets the job.

Another writer committing ``table.append()`` in a loop while a job runs; a truncated gzip CSV and a
corrupt Parquet file among the job's sources.
"""

from __future__ import annotations

import threading
from pathlib import Path

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog

from app.client import TaskArg
from app.jobs.model import JobState
from chaos.cases import SMALL_WRITES, TABLE_PROPS, CaseResult, case, observed, start_job, task_files, verify
from chaos.data import ARROW_SCHEMA, arrow_rows, make_table, truncate_file, write_csv
from chaos.harness import ChaosError, Cluster, wait_until


@case("concurrent_writer", "another writer commits table.append() in a loop while a job runs")
def concurrent_writer(home: Path, res: CaseResult) -> None:
    expected = set(range(200_000))  # plus every id the other writer committed
    with Cluster(home, SMALL_WRITES) as c, observed(c, res, expected):
        make_table(c.catalog, "chaos.events", TABLE_PROPS)
        write_csv(c.data_dir(1) / "a.csv", 0, 100_000)
        write_csv(c.data_dir(2) / "b.csv", 100_000, 100_000)
        c.start_coordinator()
        c.start_workers([1, 2])
        writer = AppendLoop(c.new_catalog(), 10_000_000, 200)
        writer.start()
        try:
            wait_until(lambda: writer.progressed(2), 60, "the other writer's first commits")
            job_id = start_job(c, res, [TaskArg("t1", "1", ["a.csv"]), TaskArg("t2", "2", ["b.csv"])])
            job = c.wait_job(job_id)
            after = writer.committed
            wait_until(lambda: writer.progressed(after + 2), 60, "the other writer to go on after the job")
        finally:
            writer.stop()
        if writer.error:
            raise ChaosError(f"the other writer failed: {writer.error}")
        if job.state != JobState.COMPLETED:
            raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
        retries = c.store.counters().get("commit_conflict_retries_total", 0)
        committed = c.table().metadata.snapshot_by_id(job.committed_snapshot_id or 0)
        rebased = committed is not None and committed.parent_snapshot_id != job.snapshot.parent_snapshot_id
        res.notes.append(
            f"other writer committed {writer.committed} appends; Floe's commit "
            f"{'rebased onto a newer head' if rebased else 'did not need to rebase'}, "
            f"{retries:.0f} conflict retries"
        )
        verify(c, res, expected | writer.ids, [job_id], other_snapshots=writer.committed)


class AppendLoop(threading.Thread):
    """A plain pyiceberg writer appending batches of new ids to the same table until stopped."""

    def __init__(self, catalog: Catalog, first_id: int, batch: int) -> None:
        super().__init__(daemon=True, name="append-loop")
        self.catalog = catalog
        self.next_id, self.batch = first_id, batch
        self.ids: set[int] = set()
        self.committed = 0
        self.error = ""
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                table = self.catalog.load_table("chaos.events")
                table.append(
                    arrow_rows(self.next_id, self.batch).cast(ARROW_SCHEMA)
                )  # pyiceberg retries its own conflicts
                self.ids.update(range(self.next_id, self.next_id + self.batch))
                self.next_id += self.batch
                self.committed += 1
        except Exception as exc:  # noqa: BLE001 - reported by the case
            self.error = f"{type(exc).__name__}: {exc}"

    def progressed(self, at_least: int) -> bool:
        if self.error:
            raise ChaosError(f"the other writer failed: {self.error}")
        return self.committed >= at_least

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)
        if isinstance(self.catalog, SqlCatalog):
            self.catalog.engine.dispose()


@case(
    "corrupt_source",
    "a truncated gzip CSV and a corrupt Parquet file: job FAILED naming the file, nothing left",
)
def corrupt_source(home: Path, res: CaseResult) -> None:
    with Cluster(home, SMALL_WRITES) as c, observed(c, res, set()):
        table = make_table(c.catalog, "chaos.events", TABLE_PROPS)
        write_csv(c.data_dir(1) / "good.csv", 0, 50_000)
        write_csv(
            c.data_dir(2) / "first.csv", 50_000, 300_000
        )  # converted (files written) before the bad one
        truncate_file(write_csv(c.data_dir(2) / "bad.csv.gz", 350_000, 100_000))
        c.data_dir(1).joinpath("broken.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 64)
        c.start_coordinator()
        c.start_workers([1, 2])
        truncated = start_job(
            c, res, [TaskArg("t1", "1", ["good.csv"]), TaskArg("t2", "2", ["first.csv", "bad.csv.gz"])]
        )
        corrupt = start_job(c, res, [TaskArg("p1", "1", ["broken.parquet"])])
        for job_id, task_id, name in ((truncated, "t2", "bad.csv.gz"), (corrupt, "p1", "broken.parquet")):
            job = c.wait_job(job_id)
            # the task failed permanently (no retries) and the job says which file
            if (
                job.state != JobState.FAILED
                or f"task {task_id} failed" not in job.failure_reason
                or name not in job.failure_reason
                or "gave up after" in job.failure_reason
            ):
                raise ChaosError(f"job ended {job.summary()}\n{c.logs()}")
            res.notes.append(f"{name}: {job.failure_reason[:160]}")
        verify(c, res, set(), [], [truncated, corrupt], settle=30)
        if task_files(table, "t2") or task_files(table, "t1"):
            raise ChaosError("data files of the failed job remain")
