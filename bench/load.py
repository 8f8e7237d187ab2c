"""Load: concurrent jobs on a real local stack while status is polled as fast as it goes (issue 6).

``python -m bench.load`` (``make load``) starts the local stack (Redis, the coordinator, 3 hosts,
beat) on free ports in a temporary FLOE_HOME, writes tiny CSV sources (one per task, each on its
host), then at once starts 20 jobs of 50 tasks (tasks spread round-robin over the hosts, every job
into the same table) while ``--pollers`` threads call GetJobStatus back to back on the running jobs
and one more thread keeps starting (and cancelling) empty probe jobs, for StartJob samples under the
load. Before the load, on the idle stack: StartJob of a job as big as the load's, and of one job of
``--big-tasks`` (10,000) tasks (each on a host nobody serves, cancelled at once; StartJob answers
before the tasks are published). It measures GetJobStatus and StartJob latency (p50/p90/p99/max), checks that every job
committed exactly once (one snapshot per job id in the table's ``floe.job-id`` summaries, the
job's committed snapshot among them, every row present once, no probe job committed), writes
``bench/results/load.json`` and prints a table. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.csv as pacsv

from app.client import CoordinatorClient, TaskArg
from app.proto_gen.api import common_pb2, coordinator_pb2
from app.stack import LocalStack, free_port, free_port_block

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "load.json"
TERMINAL = {common_pb2.COMPLETED, common_pb2.FAILED, common_pb2.CANCELLED}
NAMESPACE, TABLE = "load", "events"
CATEGORIES = ("a", "b", "c", "d")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def clean_env() -> dict[str, str]:
    """This environment without anything that would point Floe or pyiceberg elsewhere."""
    drop = ("ICEBERG_", "PYICEBERG_", "WORKER_", "FLOE_", "REDIS_URL", "COORDINATOR_ADDRESS", "FLOWER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


# --------------------------------------------------------------------------------------------
# latency samples
# --------------------------------------------------------------------------------------------


@dataclass
class Samples:
    """Latencies (seconds) of one RPC, and its errors by status code."""

    seconds: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float) -> None:
        with self.lock:
            self.seconds.append(seconds)

    def error(self, code: str) -> None:
        with self.lock:
            self.errors[code] += 1

    def summary(self, window: float) -> dict[str, Any]:
        values = sorted(self.seconds)

        def pct(p: float) -> float | None:
            if not values:
                return None
            rank = max(1, -(-len(values) * p // 100))  # nearest rank
            return round(values[int(rank) - 1] * 1000, 2)

        return {
            "n": len(values),
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "max_ms": round(values[-1] * 1000, 2) if values else None,
            "mean_ms": round(sum(values) / len(values) * 1000, 2) if values else None,
            "per_second": round(len(values) / window, 1) if window > 0 else None,
            "errors": dict(self.errors),
        }


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    jobs: int
    tasks: int
    hosts: int
    pollers: int
    rows_per_task: int
    concurrency: int
    timeout: float
    big_tasks: int = 10_000
    big_runs: int = 5

    @property
    def rows(self) -> int:
        return self.jobs * self.tasks * self.rows_per_task


def write_sources(config: Config, host_dirs: dict[str, Path]) -> dict[int, list[TaskArg]]:
    """One tiny CSV per task on its host; ids are unique across the run. -> job index -> tasks."""
    hosts = sorted(host_dirs, key=int)
    plan: dict[int, list[TaskArg]] = {}
    base = dt.datetime(2026, 1, 1)
    for j in range(config.jobs):
        tasks = []
        for k in range(config.tasks):
            host = hosts[k % len(hosts)]
            first = (j * config.tasks + k) * config.rows_per_task
            ids = list(range(first, first + config.rows_per_task))
            table = pa.table(
                {
                    "id": pa.array(ids, pa.int64()),
                    "name": pa.array([f"job-{j}"] * len(ids), pa.string()),
                    "category": pa.array([CATEGORIES[i % len(CATEGORIES)] for i in ids]),
                    "ts": pa.array([base + dt.timedelta(seconds=i) for i in ids], pa.timestamp("us")),
                    "amount": pa.array([i * 0.5 for i in ids], pa.float64()),
                }
            )
            relative = Path("load") / f"job{j:02d}" / f"task{k:03d}.csv"
            path = host_dirs[host] / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            pacsv.write_csv(table, path)
            tasks.append(TaskArg(f"t{k:03d}", host, [str(relative)]))
        plan[j] = tasks
    return plan


def create_table(stack: LocalStack) -> Any:
    from pyiceberg.catalog import load_catalog

    from tests.support.tables import SCHEMA

    settings = stack.settings
    catalog = load_catalog(settings.catalog_name, **settings.catalog_properties)
    catalog.create_namespace_if_not_exists(NAMESPACE)
    catalog.create_table(f"{NAMESPACE}.{TABLE}", schema=SCHEMA)
    return catalog


class Load:
    def __init__(self, stack: LocalStack, config: Config) -> None:
        self.stack = stack
        self.config = config
        self.status = Samples()
        self.start = Samples()
        self.probe = Samples()
        self.idle = Samples()
        self.big = Samples()
        self.job_ids: list[str] = []
        self.job_ids_lock = threading.Lock()
        self.probe_ids: list[str] = []
        self.stop = threading.Event()
        self.finished: dict[str, common_pb2.JobStatus] = {}
        self.durations: dict[str, float] = {}

    def client(self) -> CoordinatorClient:
        return CoordinatorClient(self.stack.coordinator_target, timeout=120)

    def poller(self, index: int) -> None:
        """GetJobStatus back to back, round-robin over the jobs started so far."""
        with self.client() as client:
            i = index
            while not self.stop.is_set():
                with self.job_ids_lock:
                    ids = list(self.job_ids)
                if not ids:
                    time.sleep(0.001)
                    continue
                job_id = ids[i % len(ids)]
                i += 1
                began = time.perf_counter()
                try:
                    reply = client.status(job_id)
                except grpc.RpcError as err:
                    self.status.error(err.code().name)
                    continue
                self.status.add(time.perf_counter() - began)
                if reply.state in TERMINAL and job_id not in self.finished:
                    self.finished[job_id] = reply

    def prober(self) -> None:
        """StartJob samples under the load: empty jobs (no tasks, no auto-commit), cancelled at once."""
        with self.client() as client:
            while not self.stop.is_set():
                began = time.perf_counter()
                try:
                    reply = client.start_job(NAMESPACE, TABLE, requester="load-probe", auto_commit=False)
                except grpc.RpcError as err:
                    self.probe.error(err.code().name)
                    time.sleep(0.05)
                    continue
                self.probe.add(time.perf_counter() - began)
                self.probe_ids.append(reply.job_id)
                try:
                    client.cancel(reply.job_id, "load probe")
                except grpc.RpcError as err:
                    self.probe.error(f"CancelJob {err.code().name}")

    def start_job(self, index: int, tasks: list[TaskArg], barrier: threading.Barrier) -> None:
        with self.client() as client:
            barrier.wait()
            began = time.perf_counter()
            try:
                reply = client.start_job(
                    NAMESPACE,
                    TABLE,
                    requester="load",
                    tasks=tasks,
                    timeout_seconds=int(self.config.timeout),
                    idempotency_key=f"load-{os.getpid()}-{index}",
                )
            except grpc.RpcError as err:
                self.start.error(err.code().name)
                log(f"StartJob {index} failed: {err.code().name}: {err.details()}")
                return
            self.start.add(time.perf_counter() - began)
            with self.job_ids_lock:
                self.job_ids.append(reply.job_id)
            self.durations[reply.job_id] = -began  # completed below

    def warm_up(self) -> None:
        """A few StartJob (cancelled) and status reads first: the coordinator loads the catalog and
        the table once per process, which is not what the load measures. Then the idle baseline:
        StartJob of a job as big as the load's (its tasks on a host nobody serves; cancelled)."""
        with self.client() as client:
            for _ in range(3):
                reply = client.start_job(NAMESPACE, TABLE, requester="load-warm-up", auto_commit=False)
                client.status(reply.job_id)
                client.cancel(reply.job_id, "warm-up")
                self.probe_ids.append(reply.job_id)
            tasks = [TaskArg(f"t{k:03d}", "idle", ["none.csv"]) for k in range(self.config.tasks)]
            for _ in range(5):
                began = time.perf_counter()
                reply = client.start_job(NAMESPACE, TABLE, requester="load-idle", tasks=tasks)
                self.idle.add(time.perf_counter() - began)
                client.cancel(reply.job_id, "idle baseline")
                self.probe_ids.append(reply.job_id)
            # one job of --big-tasks tasks at a time (the request built beforehand; StartJob answers
            # before publishing: the job is cancelled at once, which also ends its publishing)
            request = coordinator_pb2.StartJobRequest(
                table=common_pb2.TableRef(namespace=NAMESPACE, table=TABLE), requester="load-big",
                tasks=[common_pb2.IngestTask(task_id=f"b{k:06d}", host="idle", paths=["none.csv"])
                       for k in range(self.config.big_tasks)],
            )  # fmt: skip
            for _ in range(self.config.big_runs):
                time.sleep(0.5)
                began = time.perf_counter()
                reply = client.stub.StartJob(request, timeout=120)
                self.big.add(time.perf_counter() - began)
                client.cancel(reply.job_id, "big baseline")
                self.probe_ids.append(reply.job_id)

    def run(self, plan: dict[int, list[TaskArg]]) -> dict[str, Any]:
        threads = [
            threading.Thread(target=self.poller, args=(i,), name=f"poller-{i}", daemon=True)
            for i in range(self.config.pollers)
        ]
        threads.append(threading.Thread(target=self.prober, name="prober", daemon=True))
        barrier = threading.Barrier(len(plan))
        starters = [
            threading.Thread(target=self.start_job, args=(j, tasks, barrier), name=f"start-{j}")
            for j, tasks in plan.items()
        ]
        for t in threads:
            t.start()
        began = time.perf_counter()
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        log(f"{len(self.job_ids)} jobs started; waiting for them to finish")
        deadline = time.monotonic() + self.config.timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                for job_id in self.job_ids:
                    if job_id in self.finished:
                        continue
                    reply = client.status(job_id)
                    if reply.state in TERMINAL:
                        self.finished[job_id] = reply
                for job_id in list(self.finished):  # pollers add to it too
                    if self.durations.get(job_id, 0) < 0:
                        self.durations[job_id] += time.perf_counter()
                if len(self.finished) >= len(self.job_ids):
                    break
                time.sleep(0.2)
        window = time.perf_counter() - began
        self.stop.set()
        for t in threads:
            t.join(timeout=60)
        with self.client() as client:  # the final state of every job, for the checks
            final = {job_id: client.status(job_id) for job_id in self.job_ids}
        return {"window_seconds": window, "final": final}


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------


def verify(
    catalog: Any, load: Load, final: dict[str, common_pb2.JobStatus], config: Config
) -> dict[str, Any]:
    table = catalog.load_table(f"{NAMESPACE}.{TABLE}")
    per_job = Counter(
        (s.summary or {}).get("floe.job-id") for s in table.metadata.snapshots if s.summary is not None
    )
    snapshot_of = {
        (s.summary or {}).get("floe.job-id"): s.snapshot_id for s in table.metadata.snapshots if s.summary
    }
    ids = table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist()
    distinct = set(ids)
    expected = set(range(config.rows))
    states = Counter(common_pb2.JobState.Name(s.state) for s in final.values())
    problems: list[str] = []
    for job_id, status in final.items():
        if status.state != common_pb2.COMPLETED:
            problems.append(
                f"job {job_id} is {common_pb2.JobState.Name(status.state)}: {status.failure_reason}"
            )
        elif per_job.get(job_id) != 1:
            problems.append(f"job {job_id} has {per_job.get(job_id, 0)} snapshots")
        elif snapshot_of.get(job_id) != status.committed_snapshot_id:
            problems.append(
                f"job {job_id}: committed_snapshot_id {status.committed_snapshot_id} is not its snapshot"
            )
    stray = [job_id for job_id in per_job if job_id not in final]
    if stray:
        problems.append(f"snapshots of jobs that should not have committed: {stray[:5]}")
    if len(final) != config.jobs:
        problems.append(f"{len(final)} of {config.jobs} jobs were started")
    missing, unexpected = len(expected - distinct), len(distinct - expected)
    if missing or unexpected:
        problems.append(f"{missing} rows missing, {unexpected} unexpected ids")
    duplicates = len(ids) - len(distinct)
    if duplicates:
        problems.append(f"{duplicates} duplicate rows")
    return {
        "ok": not problems,
        "problems": problems,
        "job_states": dict(states),
        "snapshots": len(table.metadata.snapshots),
        "jobs_with_one_snapshot": sum(1 for job_id in final if per_job.get(job_id) == 1),
        "rows_expected": config.rows,
        "rows_found": len(ids),
        "duplicates": duplicates,
        "probe_jobs": len(load.probe_ids),
    }


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------


def machine(loadavg_before: tuple[float, ...]) -> dict[str, Any]:
    """The machine; the load averages tell whether something else was running (this run adds ~2-3)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_before": [round(x, 2) for x in loadavg_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def table(result: dict[str, Any]) -> str:
    cfg, lat, chk = result["config"], result["latency"], result["checks"]
    lines = [
        f"Floe load: {cfg['jobs']} concurrent jobs x {cfg['tasks']} tasks over {cfg['hosts']} hosts "
        f"({cfg['concurrency']} worker processes each), {cfg['pollers']} GetJobStatus pollers, "
        f"{result['window_seconds']:.1f} s",
        "",
        f"{'RPC under load':<34}{'n':>7}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'per s':>8}  errors",
    ]
    for name, key in (
        ("GetJobStatus", "GetJobStatus"),
        ("StartJob (the load's jobs)", "StartJob"),
        ("StartJob (empty probe jobs)", "StartJob_probe"),
        (f"StartJob ({cfg['tasks']} tasks, idle stack)", "StartJob_idle"),
        (f"StartJob ({cfg['big_tasks']:,} tasks, idle stack)", "StartJob_big"),
    ):
        s = lat[key]
        cells = [
            f"{s[k]:>9.1f}" if s[k] is not None else f"{'-':>9}"
            for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")
        ]
        per_s = f"{s['per_second']:>8.1f}" if s["per_second"] is not None else f"{'-':>8}"
        lines.append(f"{name:<34}{s['n']:>7}{''.join(cells)}{per_s}  {s['errors'] or '-'}")
    jobs = result["jobs"]
    lines += [
        "",
        f"jobs: {chk['job_states']}; StartJob -> COMPLETED p50 {jobs['p50_seconds']} s, max {jobs['max_seconds']} s",
        f"exactly once: {chk['jobs_with_one_snapshot']}/{cfg['jobs']} jobs with one snapshot each; "
        f"rows {chk['rows_found']}/{chk['rows_expected']}, duplicates {chk['duplicates']}; "
        f"{chk['probe_jobs']} probe jobs, none committed"
        + ("" if chk["ok"] else f"\nPROBLEMS: {chk['problems']}"),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=50, help="tasks per job (one CSV file each)")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--pollers", type=int, default=8, help="threads calling GetJobStatus back to back")
    parser.add_argument("--rows-per-task", type=int, default=20)
    parser.add_argument(
        "--concurrency", type=int, default=0, help="Celery worker processes per host (default: cores)"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds the jobs get to finish")
    parser.add_argument("--big-tasks", type=int, default=10_000, help="tasks of the one-job StartJob samples")
    parser.add_argument("--big-runs", type=int, default=5, help="one-job StartJob samples of --big-tasks tasks")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--home", type=Path, help="FLOE_HOME (default: a temporary directory, removed after)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loadavg_before = os.getloadavg()
    config = Config(
        jobs=args.jobs,
        tasks=args.tasks,
        hosts=args.hosts,
        pollers=args.pollers,
        rows_per_task=args.rows_per_task,
        concurrency=args.concurrency or os.cpu_count() or 1,
        timeout=args.timeout,
        big_tasks=args.big_tasks,
        big_runs=args.big_runs,
    )
    home = args.home or Path(tempfile.mkdtemp(prefix="floe-load-"))
    stack = LocalStack(
        hosts=config.hosts,
        home=home,
        env=clean_env(),
        coordinator_port=free_port(),
        worker_base_port=free_port_block(config.hosts),
        concurrency=config.concurrency,
        flower=False,
    )
    try:
        log(f"starting the stack in {home} ({config.hosts} hosts)")
        stack.start()
        stack.wait_healthy(timeout=180)
        catalog = create_table(stack)
        plan = write_sources(config, {wid: Path(d) for wid, d, _ in stack.hosts})
        log(f"{config.jobs} jobs x {config.tasks} tasks ready; go")
        load = Load(stack, config)
        load.warm_up()
        outcome = load.run(plan)
        checks = verify(catalog, load, outcome["final"], config)
    finally:
        stack.stop()
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    durations = sorted(d for d in load.durations.values() if d > 0)
    given = argv if argv is not None else sys.argv[1:]
    result = {
        "command": " ".join(["python -m bench.load", *given]) if given else "make load",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(loadavg_before),
        "config": {**config.__dict__, "rows": config.rows},
        "window_seconds": round(outcome["window_seconds"], 2),
        "latency": {
            "GetJobStatus": load.status.summary(outcome["window_seconds"]),
            "StartJob": load.start.summary(0),
            "StartJob_probe": load.probe.summary(outcome["window_seconds"]),
            "StartJob_idle": load.idle.summary(0),
            "StartJob_big": load.big.summary(0),
        },
        "jobs": {
            "p50_seconds": round(durations[len(durations) // 2], 2) if durations else None,
            "max_seconds": round(durations[-1], 2) if durations else None,
        },
        "checks": checks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(table(result))
    print(f"\nwritten to {args.out}")
    return 0 if checks["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
