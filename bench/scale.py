"""Scale (issue 15): jobs the hosts plan themselves, on the running local stack.

1. Many tiny files: ``small_files`` five-row CSV files spread over the hosts, one job with one source
   per host (the hosts list, size and pack them). Measured: the job's wall time (StartJob sent ->
   COMPLETED), the data files and manifests it left, their bound (hosts x worker processes x
   partitions), and ``plan_files()`` on the table afterwards against the same rows written by one
   pyiceberg append (each the median of 5 plans on a freshly loaded table).
2. StartJob with 10,000 explicit tasks (``startjob_ms_10000_tasks``, the median of three calls): the call
   answers once the job and its tasks are recorded; the messages are published afterwards.
3. One big CSV on one host, planned and split into byte ranges, against the floor converting the same
   file with both cores: two floor processes, each on one half of the file (cut on a record boundary
   before any clock runs). ``big_file_floe_vs_floor`` is the median of the per-round ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv

NAMESPACE = "bench"
TINY_ROWS = 5


def _plan_ms(catalog: Any, identifier: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        table = catalog.load_table(identifier)
        started = time.perf_counter()
        table.scan().plan_files()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _halves(path: Path, out_dir: Path) -> list[str]:
    """``path`` as two CSV files (the header repeated), cut at the first line break after the middle
    (the bench's CSV has no quoted line breaks); streamed, so the harness stays small."""
    out_dir.mkdir(parents=True, exist_ok=True)
    first, second = out_dir / "half-1.csv", out_dir / "half-2.csv"
    middle = path.stat().st_size // 2
    with path.open("rb") as src, first.open("wb") as a, second.open("wb") as b:
        header = src.readline()
        a.write(header)
        b.write(header)
        written = len(header)
        while written < middle and (chunk := src.read(min(16 << 20, middle - written))):
            a.write(chunk)
            written += len(chunk)
        a.write(src.readline())  # to the end of the record the middle falls in
        while chunk := src.read(16 << 20):
            b.write(chunk)
    return [str(first), str(second)]


class ScaleBench:
    def __init__(self, floe: Any, catalog: Any, workdir: Path, log: Callable[[str], None]) -> None:
        self.floe = floe
        self.catalog = catalog
        self.workdir = workdir
        self.log = log

    def _processes(self, status: Any) -> int:
        return max((h.concurrency for h in status.hosts), default=0) or 1

    def small_files(self, n: int) -> dict[str, Any]:
        from bench.data import create_table, make_batch

        hosts = sorted(self.floe.host_dirs)
        batch = make_batch(0, n * TINY_ROWS, 4242)
        batch = batch.set_column(3, "ts", batch.column("ts").cast("timestamp[s]"))
        for i in range(n):
            d = self.floe.host_dirs[hosts[i % len(hosts)]] / "scale-small"
            d.mkdir(exist_ok=True)
            pacsv.write_csv(batch.slice(i * TINY_ROWS, TINY_ROWS), d / f"s-{i:05d}.csv")
        partitions = len({(c, t // 86_400) for c, t in zip(
            batch.column("category").to_pylist(), batch.column("ts").cast("int64").to_pylist(), strict=True
        )})  # fmt: skip
        ident = f"{NAMESPACE}.scale_small"
        create_table(self.catalog, ident, True)
        job = self.floe.run_job_sources(NAMESPACE, "scale_small", [(h, ["scale-small"]) for h in hosts])
        table = self.catalog.load_table(ident)
        assert table.scan().to_arrow().num_rows == n * TINY_ROWS, "rows lost or duplicated"
        snapshot = table.current_snapshot()
        manifests = len(snapshot.manifests(table.io)) if snapshot is not None else 0
        processes = self._processes(job.status)
        res: dict[str, Any] = {
            "planned_10000_files_s": job.seconds,
            "planned_files_written": job.status.files_written,
            "planned_files_bound": len(hosts) * processes * partitions,
            "planned_manifests": manifests,
            "plan_ms_after_10000_files": _plan_ms(self.catalog, ident),
        }
        # the same rows, one pyiceberg append
        twin = f"{NAMESPACE}.scale_single_append"
        create_table(self.catalog, twin, True)
        appended = self.catalog.load_table(twin)
        appended.append(batch.cast(appended.schema().as_arrow()))
        res["plan_ms_single_append_same_rows"] = _plan_ms(self.catalog, twin)
        res["files"] = n
        res["hosts"] = len(hosts)
        self.log(
            f"scale: {n:,} tiny files planned by {len(hosts)} hosts in {job.seconds:.1f}s; "
            f"{res['planned_files_written']} data files (bound {res['planned_files_bound']}), {manifests} manifests; "
            f"plan_files {res['plan_ms_after_10000_files']:.1f} ms vs {res['plan_ms_single_append_same_rows']:.1f} ms "
            "after one append"
        )
        return res

    def startjob(self, tasks: int = 10_000, runs: int = 3) -> dict[str, Any]:
        """StartJob with ``tasks`` explicit tasks: the call alone (the request built beforehand), median
        of ``runs``; and how long its dispatcher then took to publish every message. The tasks name a
        host no worker serves, so they only fill that host's queue (the jobs are cancelled and the queue
        dropped at the end). A StartJob of 10 tasks warms the coordinator first; each timed one meets a
        quiet stack (its predecessor's messages all published, half a second before)."""
        from app import keys
        from app.proto_gen.api import common_pb2, coordinator_pb2
        from bench.data import create_table

        host = "startjob-bench"
        ident = f"{NAMESPACE}.scale_startjob"
        create_table(self.catalog, ident, False)
        request = coordinator_pb2.StartJobRequest(
            table=common_pb2.TableRef(namespace=NAMESPACE, table="scale_startjob"),
            requester="bench",
            tasks=[
                common_pb2.IngestTask(task_id=f"t{i:06d}", host=host, paths=[f"startjob/f{i:06d}.csv"])
                for i in range(tasks)
            ],
        )
        client = self.floe.client
        r = self.floe.redis()
        answer_ms: list[float] = []
        published_s: list[float] = []
        jobs: list[str] = []
        try:
            warm = coordinator_pb2.StartJobRequest()
            warm.CopyFrom(request)
            del warm.tasks[10:]
            jobs.append(client.stub.StartJob(warm, timeout=120).job_id)  # not timed: a warm coordinator
            for _ in range(runs):
                time.sleep(0.5)  # the stack quiet again
                started = time.perf_counter()
                reply = client.stub.StartJob(request, timeout=120)
                answer_ms.append((time.perf_counter() - started) * 1000)
                jobs.append(reply.job_id)
                while r.hget(keys.job(reply.job_id), "enqueued") != "1":
                    time.sleep(0.005)
                published_s.append(time.perf_counter() - started)
            queued = _queued_tasks(r, f"host-{host}")
            assert queued == tasks * runs + 10, f"{queued} tasks queued for {tasks} x {runs} + 10 tasks"
        finally:
            for job_id in jobs:  # nobody serves the host: cancel the jobs and drop their queue
                client.cancel(job_id, "bench: StartJob measured")
            r.delete(f"host-{host}")
            r.close()
        self.log(
            f"scale: StartJob of {tasks:,} tasks answered in {statistics.median(answer_ms):.1f} ms (runs: "
            + ", ".join(f"{ms:.1f}" for ms in answer_ms)
            + f"); its messages all published {statistics.median(published_s):.2f} s after the call"
        )
        return {  # named for the default of 10,000 tasks, whatever ``tasks`` is (like planned_10000_files_s)
            "startjob_ms_10000_tasks": statistics.median(answer_ms),
            "startjob_published_s_10000_tasks": statistics.median(published_s),
            "startjob_tasks": tasks,
            "startjob_runs_ms": answer_ms,
        }

    def big_file(self, dataset: Any, size_mb: float, rounds: int) -> dict[str, Any]:
        from bench.data import big_csv, create_table
        from bench.procs import Contender, run_together

        host = sorted(self.floe.host_dirs)[0]
        src_dir = self.floe.host_dirs[host] / "scale-big"
        src_dir.mkdir(exist_ok=True)
        path = src_dir / "big.csv"
        size = big_csv(path, dataset, int(size_mb * (1 << 20)))
        halves = _halves(path, self.workdir / "scale-halves")
        floors = [Contender("floor", self.workdir / "logs", f"scale-floor-{i}") for i in (1, 2)]
        floe_s: list[float] = []
        floor_s: list[float] = []
        ratios: list[float] = []
        tasks = 0
        try:
            for r in range(1, rounds + 1):
                out = self.workdir / "out" / f"scale-floor-{r}"
                cmds = [
                    {"op": "floor", "partitioned": False,
                     "jobs": [{"files": [half], "out_dir": str(out), "prefix": f"h{i}"}]}
                    for i, half in enumerate(halves, start=1)
                ]  # fmt: skip
                seconds, replies = run_together(list(zip(floors, cmds, strict=True)))
                assert sum(reply["rows"] for reply in replies) > 0
                floor_s.append(seconds)
                name = f"scale_big_{r}"
                create_table(self.catalog, f"{NAMESPACE}.{name}", False)
                job = self.floe.run_job_sources(NAMESPACE, name, [(host, ["scale-big/big.csv"])])
                floe_s.append(job.seconds)
                tasks = job.status.tasks_total
                ratios.append(job.seconds / seconds)
                self.log(f"scale big file round {r}: floe {job.seconds:.2f}s ({tasks} tasks), floor {seconds:.2f}s")
        finally:
            for c in floors:
                c.close()
        return {
            "big_file_mb": round(size / (1 << 20), 1),
            "big_file_floe_s": statistics.median(floe_s),
            "big_file_floor_s": statistics.median(floor_s),
            "big_file_floe_vs_floor": statistics.median(ratios),
            "big_file_tasks": tasks,
        }


def _queued_tasks(r: Any, queue: str) -> int:
    """The ingest tasks the Celery messages waiting in ``queue`` carry (one, or a group's list)."""
    import base64
    import json

    count = 0
    for raw in r.lrange(queue, 0, -1):
        task_ids = json.loads(base64.b64decode(json.loads(raw)["body"]))[0][1]
        count += len(task_ids) if isinstance(task_ids, list) else 1
    return count
