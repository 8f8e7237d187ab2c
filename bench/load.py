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
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.csv as pacsv

from app.client import CoordinatorClient, TaskArg
from app.proto_gen.api import common_pb2, coordinator_pb2
from app.stack import LocalStack, free_port, free_port_block
from bench.load_report import NAMESPACE, TABLE, Config, Samples, machine, table, verify

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "load.json"
TERMINAL = {common_pb2.COMPLETED, common_pb2.FAILED, common_pb2.CANCELLED}
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
# the run
# --------------------------------------------------------------------------------------------


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
        checks = verify(catalog, len(load.probe_ids), outcome["final"], config)
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
