"""The benchmark (issue 8): Floe against the Parquet floor, pyiceberg and Daft, on one machine and one data set.

    python -m bench.run --quick            # ~300 MiB of CSV, 3 rounds (make bench-quick)
    python -m bench.run --full             # ~3 GiB of CSV (make bench), into bench/results/latest-full.json
    python -m bench.run --quick --rounds 5 --out bench/results/latest.json

Every contender is warm: the Floe stack is up and healthy, the other contenders are processes that
have imported their libraries and wait for a command on stdin, and each one has run once on a
small warm-up set before the first round. Rounds alternate floor, pyiceberg, daft, floe on a fresh
table each time (same schema, same partition spec, zstd), and every result is checked for its row
count (snapshot summary and the row counts in the Parquet footers of every data file).

Sizes in MB are MiB (2**20 bytes). Times are medians over the rounds; ratios are medians of the
per-round ratios. ``latest.json`` holds exactly the keys of issue 8; ``latest-details.json``
beside it holds every round and every sub-measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20
CONTENDERS = ("floor", "pyiceberg", "daft", "floe")
WORKLOADS = ("unpartitioned", "partitioned")
NAMESPACE = "bench"


@dataclass
class Profile:
    name: str
    csv_mb: float
    files_per_host: int
    commit_counts: list[int]
    plan_tasks: int
    overhead_tasks: int
    rss_mb: float
    rounds: int = 3
    small_files: int = 10_000  # tiny files planned by the hosts (scale)
    big_mb: float = 300  # one big CSV planned and split on one host (scale)
    startjob_tasks: int = 10_000  # explicit tasks of the StartJob timed (scale)


PROFILES = {
    "quick": Profile("quick", 300, 6, [10, 100, 1000, 5000], 1000, 1000, 2000),
    "full": Profile("full", 3000, 12, [10, 100, 1000, 5000, 10000], 1000, 1000, 4000, big_mb=2048),
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- machine -------------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 2**20
    except OSError:
        pass
    import pyarrow
    import pyiceberg

    versions = f"Python {platform.python_version()}, pyarrow {pyarrow.__version__}, pyiceberg {pyiceberg.__version__}"
    try:
        import daft

        versions += f", daft {daft.__version__}"
    except ImportError:
        versions += ", daft not installed"
    return f"{model}, {os.cpu_count()} cores, {mem_gib:.1f} GiB RAM, {platform.system()} {platform.release()}; {versions}"


def product_version() -> dict[str, Any]:
    """The commit measured, and the product files changed since (the tree may move under a run)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", "app", "workers", "pyproject.toml")
    return {"commit": git("rev-parse", "HEAD"), "changed": changed.splitlines()}


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, ours and others'), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _foreign(busy_before: float, own_cpu: float, seconds: float) -> float:
    """Cores kept busy by processes other than the contender's during its run (others' load on a shared machine)."""
    if seconds <= 0:
        return float("nan")
    return max(0.0, (machine_busy_seconds() - busy_before - own_cpu) / seconds)


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# --- checking tables -----------------------------------------------------------------------------


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


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Results:
    rounds: int
    times: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {w: {c: [] for c in CONTENDERS} for w in WORKLOADS}
    )
    files: dict[str, dict[str, int]] = field(default_factory=lambda: {w: {} for w in WORKLOADS})
    floor_variants: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {w: {"two_processes": [], "one_process_two_threads": []} for w in WORKLOADS}
    )
    cpu: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {w: {c: [] for c in CONTENDERS} for w in WORKLOADS}
    )
    foreign: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {w: {c: [] for c in CONTENDERS} for w in WORKLOADS}
    )
    floe_start_rpc: dict[str, list[float]] = field(default_factory=lambda: {w: [] for w in WORKLOADS})


def _median(values: list[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def _ratio(a: list[float], b: list[float]) -> float:
    return _median([x / y for x, y in zip(a, b, strict=True) if y])


class Bench:
    def __init__(self, profile: Profile, workdir: Path, use_daft: bool) -> None:
        self.profile = profile
        self.workdir = workdir
        self.use_daft = use_daft
        self.home = workdir / "home"
        self.details: dict[str, Any] = {
            "profile": profile.__dict__,
            "product": product_version(),
            "loadavg_start": loadavg(),
        }
        self.phase_seconds: dict[str, float] = {}

    # -- set-up ----------------------------------------------------------------------------------

    def prepare_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        for entry in self.home.iterdir():
            if entry.name != "hosts":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        for host in (self.home / "hosts").glob("*"):
            for sub in host.iterdir():
                if sub.name not in ("csv", "parquet"):
                    shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
        shutil.rmtree(self.workdir / "out", ignore_errors=True)

    def run(self) -> dict[str, Any]:
        from pyiceberg.catalog import load_catalog

        from bench.data import generate
        from bench.floe import FloeStack
        from bench.procs import Contender

        t_all = time.perf_counter()
        self.prepare_home()
        floe = FloeStack(self.home)
        contenders: dict[str, Contender] = {}
        stopper: threading.Thread | None = None
        try:
            t0 = time.perf_counter()
            floe.stack.start()  # the processes start while the data is generated
            ds = generate(self.workdir / "data", floe.host_dirs, self.profile.csv_mb * MiB / 1e6, self.profile.files_per_host)
            log(f"data: {ds.rows:,} rows, {ds.csv_bytes / MiB:.0f} MiB CSV in {len(ds.files())} files "
                f"on {len(ds.hosts)} hosts, {ds.parquet_bytes / MiB:.0f} MiB Parquet, {ds.partitions} partitions")
            floe.stack.wait_healthy(timeout=120)
            floe.start_client()
            props = floe.catalog_properties()
            catalog_props = dict(props)
            name = catalog_props.pop("name")
            self.catalog = load_catalog(name, **catalog_props)
            self.catalog_props = props
            kinds = ["floor", "floor", "pyiceberg", *(["daft"] if self.use_daft else [])]
            names = ["floor-a", "floor-b", "pyiceberg", "daft"]
            for kind, cname in zip(kinds, names, strict=False):
                contenders[cname] = Contender(kind, self.workdir / "logs", cname)
            self.phase_seconds["setup"] = time.perf_counter() - t0
            log(f"stack healthy, contenders imported and waiting ({self.phase_seconds['setup']:.1f}s)")

            t0 = time.perf_counter()
            self.warm_up(floe, contenders)
            self.phase_seconds["warm_up"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            results = Results(self.profile.rounds)
            for r in range(1, self.profile.rounds + 1):
                for workload in WORKLOADS:
                    self.one_round(r, workload, ds, floe, contenders, results)
            self.phase_seconds["rounds"] = time.perf_counter() - t0
            for c in contenders.values():
                c.close()
            contenders.clear()

            t0 = time.perf_counter()
            meta = self.metadata_bench()
            self.phase_seconds["commit_and_plan"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            overhead = self.overhead_bench(floe)
            self.phase_seconds["per_task_overhead"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            scale = self.scale_bench(floe, ds)
            self.phase_seconds["scale"] = time.perf_counter() - t0
            # the stack is no longer timed: it shuts down while the memory runs go (no clock there)
            stopper = threading.Thread(target=floe.stop, name="stop-stack")
            stopper.start()
            t0 = time.perf_counter()
            rss = self.rss_bench(ds)
            self.phase_seconds["rss"] = time.perf_counter() - t0
        finally:
            for c in contenders.values():
                c.close()
            if stopper is not None:
                stopper.join()
            else:
                floe.stop()
        self.phase_seconds["total"] = time.perf_counter() - t_all
        self.details["loadavg_end"] = loadavg()
        self.details["phase_seconds"] = self.phase_seconds
        return self.assemble(ds, results, meta, overhead, rss, scale)

    # -- the contenders ----------------------------------------------------------------------------

    def warm_up(self, floe: Any, contenders: dict[str, Any]) -> None:
        """Each contender once per workload on a small set, so no one pays first-use costs in round 1."""
        import pyarrow.csv as pacsv

        from bench.data import ARROW_SCHEMA, make_batch

        warm: dict[str, list[str]] = {}
        rows = 0
        for i, (host, base) in enumerate(sorted(floe.host_dirs.items())):
            (base / "warm").mkdir(exist_ok=True)
            path = base / "warm" / "warm.csv"
            batch = make_batch(i * 20_000, 20_000, 900 + i)
            pacsv.write_csv(batch.set_column(3, "ts", batch.column("ts").cast("timestamp[s]")), path)
            assert batch.schema == ARROW_SCHEMA
            warm[host] = [str(path)]
            rows += batch.num_rows
        for workload in WORKLOADS:
            self._run_all(f"warm_{workload}", workload, warm, rows, "warm/*.csv", floe, contenders)
        log("warm-up done")

    def one_round(self, r: int, workload: str, ds: Any, floe: Any, contenders: dict[str, Any], results: Results) -> None:
        host_files = {h: ds.hosts[h]["csv"] for h in sorted(ds.hosts)}
        timing = self._run_all(f"r{r}_{workload}", workload, host_files, ds.rows, "csv/*.csv", floe, contenders)
        for c in CONTENDERS:
            results.times[workload][c].append(timing[c]["seconds"])
            results.cpu[workload][c].append(timing[c]["cpu"])
            results.foreign[workload][c].append(timing[c]["foreign_cores"])
            results.files[workload][c] = timing[c]["files"]
        results.floor_variants[workload]["two_processes"].append(timing["floor"]["two_processes"])
        results.floor_variants[workload]["one_process_two_threads"].append(timing["floor"]["threads"])
        results.floe_start_rpc[workload].append(timing["floe"]["start_rpc"])
        line = "  ".join(
            f"{c} {timing[c]['seconds']:.2f}s ({timing[c]['cpu']:.1f} cpu-s, {timing[c]['files']} files, "
            f"others {timing[c]['foreign_cores']:.1f} cores)"
            for c in CONTENDERS
        )
        log(f"round {r} {workload}: {line}")

    def _run_all(
        self,
        tag: str,
        workload: str,
        host_files: dict[str, list[str]],
        rows: int,
        pattern: str,
        floe: Any,
        contenders: dict[str, Any],
    ) -> dict[str, dict[str, Any]]:
        from app.client import TaskArg
        from bench.data import create_table
        from bench.procs import run_together

        partitioned = workload == "partitioned"
        all_files = [f for h in sorted(host_files) for f in host_files[h]]
        out: dict[str, dict[str, Any]] = {}

        # A. the floor: two processes, then one process with two threads; the faster counts
        base = self.workdir / "out" / f"floor-{tag}"
        jobs = [{"files": host_files[h], "out_dir": str(base / f"p-{h}"), "prefix": f"h{h}"} for h in sorted(host_files)]
        busy = machine_busy_seconds()
        seconds_2p, replies = run_together(
            [(contenders[n], {"op": "floor", "jobs": [job], "partitioned": partitioned})
             for n, job in zip(("floor-a", "floor-b"), jobs, strict=False)]
        )
        paths_2p = [p for rep in replies for p in rep["paths"]]
        cpu_2p = sum(rep["cpu_s"] for rep in replies)
        foreign_2p = _foreign(busy, cpu_2p, seconds_2p)
        self._check_floor(paths_2p, rows, f"floor (two processes) {tag}")
        shutil.rmtree(base, ignore_errors=True)
        jobs = [{**job, "out_dir": job["out_dir"].replace("/p-", "/t-")} for job in jobs]
        busy = machine_busy_seconds()
        seconds_2t, reply = contenders["floor-a"].run({"op": "floor", "jobs": jobs, "partitioned": partitioned})
        foreign_2t = _foreign(busy, reply["cpu_s"], seconds_2t)
        self._check_floor(reply["paths"], rows, f"floor (two threads) {tag}")
        shutil.rmtree(base, ignore_errors=True)
        out["floor"] = {
            "seconds": min(seconds_2p, seconds_2t),
            "files": len(paths_2p) if seconds_2p <= seconds_2t else len(reply["paths"]),
            "cpu": cpu_2p if seconds_2p <= seconds_2t else reply["cpu_s"],
            "foreign_cores": foreign_2p if seconds_2p <= seconds_2t else foreign_2t,
            "two_processes": seconds_2p,
            "threads": seconds_2t,
        }

        # B. pyiceberg and C. daft: one process each, table.append() / write_iceberg()
        for kind in ("pyiceberg", "daft"):
            ident = f"{NAMESPACE}.{kind}_{tag}"
            if kind == "daft" and not self.use_daft:
                out[kind] = {"seconds": float("nan"), "files": 0, "cpu": float("nan"), "foreign_cores": float("nan")}
                continue
            create_table(self.catalog, ident, partitioned)
            busy = machine_busy_seconds()
            seconds, reply = contenders[kind].run(
                {"op": kind, "catalog": self.catalog_props, "table": ident, "files": all_files}
            )
            out[kind] = {
                "seconds": seconds,
                "files": check_table(self.catalog, ident, rows),
                "cpu": reply["cpu_s"],
                "foreign_cores": _foreign(busy, reply["cpu_s"], seconds),
            }
            drop_table(self.catalog, ident)

        # D. floe: the stack, one task per host covering all of its files
        table = f"floe_{tag}"
        create_table(self.catalog, f"{NAMESPACE}.{table}", partitioned)
        tasks = [TaskArg(task_id=f"{tag}-h{h}", host=h, paths=[pattern]) for h in sorted(host_files)]
        cpu = floe.cpu_seconds()
        busy = machine_busy_seconds()
        job = floe.run_job(NAMESPACE, table, tasks)
        cpu = floe.cpu_seconds() - cpu
        out["floe"] = {
            "seconds": job.seconds,
            "cpu": cpu,
            "foreign_cores": _foreign(busy, cpu, job.seconds),
            "files": check_table(self.catalog, f"{NAMESPACE}.{table}", rows),
            "start_rpc": job.start_rpc_seconds,
        }
        drop_table(self.catalog, f"{NAMESPACE}.{table}")
        return out

    @staticmethod
    def _check_floor(paths: list[str], rows: int, what: str) -> None:
        found = footer_rows(paths)
        if found != rows:
            raise CheckFailed(f"{what}: expected {rows} rows, the Parquet footers hold {found}")

    # -- metadata: commit and planning ------------------------------------------------------------

    def metadata_bench(self) -> dict[str, Any]:
        from bench.metadata import MetadataBench

        commit: dict[str, dict[str, Any]] = {}
        plan: dict[str, Any] = {}
        with MetadataBench(self.catalog, self.catalog_props, self.workdir / "meta") as mb:
            counts = sorted(set(self.profile.commit_counts) | {self.profile.plan_tasks})
            for n in counts:
                # single commits are noisy on a busy machine: up to 1,000 tasks, the median of three jobs
                repeats = [mb.commit_round(n, plan=n == self.profile.plan_tasks) for _ in range(3 if n <= 1000 else 1)]
                for extra in repeats[1:]:
                    for ident in extra["tables"].values():
                        drop_table(self.catalog, ident)
                res = dict(repeats[0])
                for key in ("plain_ms", "merged_ms", "merged_cleanup_ms", "pyiceberg_ms", "plan_plain_ms",
                            "plan_merged_ms", "plan_single_append_ms"):
                    if key in res:
                        res[key] = statistics.median(r[key] for r in repeats)
                res["jobs"] = len(repeats)
                if n in self.profile.commit_counts:
                    commit[str(n)] = res
                    log(f"commit {n:>5} manifests: floe {res['plain_ms']:.0f} ms plain, "
                        f"{res['merged_ms']:.0f} ms merged (+{res['merged_cleanup_ms']:.0f} ms deleting merged-away "
                        f"manifests after); pyiceberg fast append {res['pyiceberg_ms']:.0f} ms")
                if n == self.profile.plan_tasks:
                    plan = {
                        "tasks": n,
                        "merged_ms": res["plan_merged_ms"],
                        "merged_files": res["plan_merged_files"],
                        "plain_ms": res["plan_plain_ms"],
                        "single_append_ms": res["plan_single_append_ms"],
                        "single_append_files": res["plan_single_append_files"],
                    }
                    log(f"plan after {n} tasks: merged {plan['merged_ms']:.0f} ms, unmerged {plan['plain_ms']:.0f} ms, "
                        f"one append of the same files {plan['single_append_ms']:.0f} ms")
                for ident in res["tables"].values():
                    drop_table(self.catalog, ident)
            # the same number of data files in 10x fewer manifests: does the commit follow manifests or files?
            n = max(1, min(100, max(self.profile.commit_counts) // 10))
            wide = mb.commit_round(n, partitioned=True, source=mb.wide_source(10))
            for ident in wide["tables"].values():
                drop_table(self.catalog, ident)
            log(f"commit {n} manifests x {wide['data_files'] // n} files: floe {wide['plain_ms']:.0f} ms plain, "
                f"{wide['merged_ms']:.0f} ms merged; pyiceberg {wide['pyiceberg_ms']:.0f} ms")
        self.details["commit"] = commit
        self.details["commit_wide_manifests"] = wide
        self.details["plan"] = plan
        return {"commit": commit, "plan": plan}

    # -- per-task overhead through the stack --------------------------------------------------------

    def overhead_bench(self, floe: Any) -> dict[str, Any]:
        import pyarrow.csv as pacsv

        from app.client import TaskArg
        from bench.data import create_table, make_batch

        n = self.profile.overhead_tasks
        hosts = sorted(floe.host_dirs)
        tiny = make_batch(0, 5, 3)
        tiny = tiny.set_column(3, "ts", tiny.column("ts").cast("timestamp[s]"))
        tasks = []
        for i in range(n):
            host = hosts[i % len(hosts)]
            d = floe.host_dirs[host] / "tiny"
            d.mkdir(exist_ok=True)
            pacsv.write_csv(tiny, d / f"t-{i:05d}.csv")
            tasks.append(TaskArg(task_id=f"tiny-{i:05d}", host=host, paths=[f"tiny/t-{i:05d}.csv"]))
        # the fixed cost: the same job with one tiny task per host
        create_table(self.catalog, f"{NAMESPACE}.overhead_base", False)
        base = floe.run_job(NAMESPACE, "overhead_base", tasks[: len(hosts)])
        check_table(self.catalog, f"{NAMESPACE}.overhead_base", 5 * len(hosts))
        drop_table(self.catalog, f"{NAMESPACE}.overhead_base")

        create_table(self.catalog, f"{NAMESPACE}.overhead", False)
        before = floe.redis_commandstats()
        cpu_before = floe.cpu_by_role()
        job = floe.run_job(NAMESPACE, "overhead", tasks)
        cpu_after = floe.cpu_by_role()
        after = floe.redis_commandstats()
        cpu_ms = {k: (v - cpu_before.get(k, 0.0)) * 1000 / n for k, v in cpu_after.items()}
        check_table(self.catalog, f"{NAMESPACE}.overhead", 5 * n)
        drop_table(self.catalog, f"{NAMESPACE}.overhead")
        calls = sum(v.get("calls", 0) - before.get(k, {}).get("calls", 0) for k, v in after.items())
        usec = sum(v.get("usec", 0) - before.get(k, {}).get("usec", 0) for k, v in after.items())
        top = sorted(
            ((k.removeprefix("cmdstat_"), v.get("calls", 0) - before.get(k, {}).get("calls", 0)) for k, v in after.items()),
            key=lambda kv: -kv[1],
        )[:8]
        res = {
            "tasks": n,
            "job_seconds": job.seconds,
            "per_task_ms": job.seconds * 1000 / n,
            "marginal_per_task_ms": (job.seconds - base.seconds) * 1000 / max(1, n - len(hosts)),
            "fixed_job_seconds": base.seconds,
            "start_job_rpc_ms": job.start_rpc_seconds * 1000,
            "coordinator_ms_per_task": job.start_rpc_seconds * 1000 / n,
            "redis_calls_per_task": calls / n,
            "redis_server_ms_per_task": usec / 1000 / n,
            "redis_top_commands": dict(top),
            "cpu_ms_per_task_by_role": dict(sorted(cpu_ms.items(), key=lambda kv: -kv[1])),
            "cpu_ms_per_task": sum(cpu_ms.values()),
        }
        log(f"per-task overhead: {res['per_task_ms']:.1f} ms/task over {n} tasks ({job.seconds:.1f}s); StartJob "
            f"{res['start_job_rpc_ms']:.0f} ms ({res['coordinator_ms_per_task']:.2f} ms/task); Redis "
            f"{res['redis_calls_per_task']:.1f} calls and {res['redis_server_ms_per_task']:.2f} ms server time per task")
        log("CPU per task by role: " + ", ".join(f"{k} {v:.2f} ms" for k, v in res["cpu_ms_per_task_by_role"].items()))
        self.details["overhead"] = res
        return res

    # -- scale: jobs the hosts plan (bench/scale.py) ---------------------------------------------

    def scale_bench(self, floe: Any, ds: Any) -> dict[str, Any]:
        from bench.scale import ScaleBench

        scale = ScaleBench(floe, self.catalog, self.workdir, log)
        res = scale.startjob(self.profile.startjob_tasks)
        res.update(scale.small_files(self.profile.small_files))
        res.update(scale.big_file(ds, self.profile.big_mb, self.profile.rounds))
        self.details["scale"] = res
        return res

    # -- memory -----------------------------------------------------------------------------------

    def rss_bench(self, ds: Any) -> dict[str, Any]:
        """Floe's worker and pyiceberg on one big CSV, each in a fresh process (run side by side)."""
        from bench.data import big_csv, create_table
        from bench.procs import ContenderError, clean_env

        path = self.workdir / "data" / "big.csv"
        size = big_csv(path, ds, int(self.profile.rss_mb * MiB))
        res: dict[str, Any] = {"source_mb": size / MiB}
        procs = {}
        for mode in ("worker", "pyiceberg"):
            ident = f"{NAMESPACE}.rss_{mode}"
            create_table(self.catalog, ident, False)
            argv = [sys.executable, "-m", "bench.rss", mode, json.dumps(self.catalog_props), ident, str(path)]
            procs[mode] = subprocess.Popen(
                argv, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        for mode, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise ContenderError(f"bench.rss {mode} failed ({proc.returncode}):\n{stderr[-3000:]}")
            out = json.loads(stdout.strip().splitlines()[-1])
            res[mode] = out
            drop_table(self.catalog, f"{NAMESPACE}.rss_{mode}")
            log(f"peak RSS {mode}: {out['peak_rss_mb']:.0f} MiB converting {size / MiB:.0f} MiB of CSV "
                f"({out['rows']:,} rows; baseline after imports {out['baseline_rss_mb']:.0f} MiB)")
        self.details["rss"] = res
        return res

    # -- the result -------------------------------------------------------------------------------

    def assemble(
        self, ds: Any, results: Results, meta: dict[str, Any], overhead: dict[str, Any], rss: dict[str, Any],
        scale: dict[str, Any],
    ) -> dict[str, Any]:  # fmt: skip
        out: dict[str, Any] = {
            "machine": machine(),
            "rounds": results.rounds,
            "source_mb": round(ds.csv_bytes / MiB, 1),
        }
        for w in WORKLOADS:
            t = results.times[w]
            out[w] = {
                "floor_s": _median(t["floor"]),
                "pyiceberg_s": _median(t["pyiceberg"]),
                "daft_s": _median(t["daft"]),
                "floe_s": _median(t["floe"]),
                "floe_vs_floor": _ratio(t["floe"], t["floor"]),
                "floe_vs_pyiceberg": _ratio(t["floe"], t["pyiceberg"]),
                "floe_vs_daft": _ratio(t["floe"], t["daft"]),
                "files": dict(results.files[w]),
            }
        out["partitions"] = ds.partitions
        out["commit_ms"] = {n: r["merged_ms"] for n, r in meta["commit"].items()}
        out["plan_ms_1000_merged"] = meta["plan"]["merged_ms"]
        out["plan_ms_single_append"] = meta["plan"]["single_append_ms"]
        out["per_task_overhead_ms"] = overhead["per_task_ms"]
        out["worker_peak_rss_mb"] = rss["worker"]["peak_rss_mb"]
        out["worker_rss_source_mb"] = rss["source_mb"]
        out["pyiceberg_peak_rss_mb"] = rss["pyiceberg"]["peak_rss_mb"]
        out["scale"] = {k: v for k, v in scale.items() if k not in ("files", "hosts", "startjob_tasks", "startjob_runs_ms")}
        out = _rounded(out)
        self.details["rounds"] = {
            "times": results.times,
            "cpu_seconds": results.cpu,
            "foreign_cores_busy": results.foreign,
            "foreign_cores_medians": {w: {c: _median(results.foreign[w][c]) for c in CONTENDERS} for w in WORKLOADS},
            "cpu_medians": {w: {c: _median(results.cpu[w][c]) for c in CONTENDERS} for w in WORKLOADS},
            "floor_vs_pyiceberg": {w: _ratio(results.times[w]["floor"], results.times[w]["pyiceberg"]) for w in WORKLOADS},
            "floor_vs_daft": {w: _ratio(results.times[w]["floor"], results.times[w]["daft"]) for w in WORKLOADS},
            "floor_variants": results.floor_variants,
            "floe_start_job_rpc_s": results.floe_start_rpc,
        }
        self.details["dataset"] = {"rows": ds.rows, "csv_mb": ds.csv_bytes / MiB, "parquet_mb": ds.parquet_bytes / MiB,
                                   "files_per_host": self.profile.files_per_host, "hosts": len(ds.hosts)}
        return out


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if abs(value) < 10 else round(value, 1)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


# --- targets and printing ------------------------------------------------------------------------


def targets(result: dict[str, Any], full: bool) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for every target of issue 8 that this run can judge."""
    u, p = result["unpartitioned"], result["partitioned"]
    out = [
        ("unpartitioned floe_vs_floor <= 1.15", f"{u['floe_vs_floor']:.3f}", u["floe_vs_floor"] <= 1.15),
        ("unpartitioned floe_vs_pyiceberg <= 1.05", f"{u['floe_vs_pyiceberg']:.3f}", u["floe_vs_pyiceberg"] <= 1.05),
        ("partitioned floe_vs_daft <= 0.8", f"{p['floe_vs_daft']:.3f}", p["floe_vs_daft"] <= 0.8),
        ("partitioned floe_vs_pyiceberg <= 0.4", f"{p['floe_vs_pyiceberg']:.3f}", p["floe_vs_pyiceberg"] <= 0.4),
        (
            "partitioned floe files <= 2 x partitions",
            f"{p['files']['floe']} files, {result['partitions']} partitions",
            p["files"]["floe"] <= 2 * result["partitions"],
        ),
    ]
    if "1000" in result["commit_ms"]:
        out.append(("commit_ms[1000] (merging on) <= 200", f"{result['commit_ms']['1000']:.0f}", result["commit_ms"]["1000"] <= 200))
    out += [
        (
            "plan_ms_1000_merged <= 2 x plan_ms_single_append",
            f"{result['plan_ms_1000_merged']:.1f} vs {result['plan_ms_single_append']:.1f}",
            result["plan_ms_1000_merged"] <= 2 * result["plan_ms_single_append"],
        ),
        ("per_task_overhead_ms <= 4 (issue 16)", f"{result['per_task_overhead_ms']:.2f}", result["per_task_overhead_ms"] <= 4),
        (
            "worker_peak_rss_mb <= 512 with worker_rss_source_mb >= 2000",
            f"{result['worker_peak_rss_mb']:.0f} MiB on {result['worker_rss_source_mb']:.0f} MiB",
            result["worker_peak_rss_mb"] <= 512 and result["worker_rss_source_mb"] >= 2000,
        ),
    ]
    if "scale" in result:
        s = result["scale"]
        out += [
            (
                "scale: startjob_ms_10000_tasks <= 50 (issue 16)",
                f"{s['startjob_ms_10000_tasks']:.1f}",
                s["startjob_ms_10000_tasks"] <= 50,
            ),
            (
                "scale: planned_files_written <= planned_files_bound",
                f"{s['planned_files_written']} vs {s['planned_files_bound']}",
                s["planned_files_written"] <= s["planned_files_bound"],
            ),
            (
                "scale: plan_ms_after_10000_files <= 2 x plan_ms_single_append_same_rows",
                f"{s['plan_ms_after_10000_files']:.1f} vs {s['plan_ms_single_append_same_rows']:.1f}",
                s["plan_ms_after_10000_files"] <= 2 * s["plan_ms_single_append_same_rows"],
            ),
            (
                "scale: big_file_floe_vs_floor <= 1.15",
                f"{s['big_file_floe_vs_floor']:.3f} ({s['big_file_mb']:.0f} MiB, {s['big_file_tasks']} tasks)",
                s["big_file_floe_vs_floor"] <= 1.15,
            ),
        ]
    if full:
        out.append(("full: unpartitioned floe_vs_floor <= 1.10", f"{u['floe_vs_floor']:.3f}", u["floe_vs_floor"] <= 1.10))
    return out


def report(result: dict[str, Any], details: dict[str, Any], full: bool) -> str:
    lines = [f"machine: {result['machine']}", f"source: {result['source_mb']} MiB of CSV, {result['rounds']} rounds", ""]
    head = f"{'workload':<14} {'floor_s':>8} {'pyiceberg_s':>11} {'daft_s':>8} {'floe_s':>8} {'floe/floor':>10} {'floe/pyice':>10} {'floe/daft':>9}  files floor/pyiceberg/daft/floe"
    lines.append(head)
    for w in WORKLOADS:
        r = result[w]
        f = r["files"]
        lines.append(
            f"{w:<14} {r['floor_s']:>8.2f} {r['pyiceberg_s']:>11.2f} {r['daft_s']:>8.2f} {r['floe_s']:>8.2f} "
            f"{r['floe_vs_floor']:>10.3f} {r['floe_vs_pyiceberg']:>10.3f} {r['floe_vs_daft']:>9.3f}  "
            f"{f.get('floor')}/{f.get('pyiceberg')}/{f.get('daft')}/{f.get('floe')}"
        )
    cpu = details.get("rounds", {}).get("cpu_medians", {})
    for w in WORKLOADS:
        if w in cpu:
            c = cpu[w]
            lines.append(
                f"{'  cpu-s ' + w[:6]:<14} {c['floor']:>8.2f} {c['pyiceberg']:>11.2f} {c['daft']:>8.2f} {c['floe']:>8.2f}"
                "   (CPU seconds of every process involved, medians)"
            )
    foreign = details.get("rounds", {}).get("foreign_cores_medians", {})
    for w in WORKLOADS:
        if w in foreign:
            f = foreign[w]
            lines.append(
                f"{'  others ' + w[:6]:<14} {f['floor']:>8.2f} {f['pyiceberg']:>11.2f} {f['daft']:>8.2f} {f['floe']:>8.2f}"
                "   (cores kept busy by other processes on the machine during the runs, medians)"
            )
    fvp = details.get("rounds", {}).get("floor_vs_pyiceberg", {})
    if fvp:
        lines.append(
            "floor/pyiceberg (the best ratio any writer reaches here): "
            + ", ".join(f"{w} {fvp[w]:.3f}" for w in WORKLOADS if w in fvp)
        )
    lines.append(f"partitions in the data: {result['partitions']}")
    lines.append("")
    lines.append(
        f"{'task manifests':>14} {'floe plain ms':>14} {'floe merged ms':>15} {'pyiceberg fast-append ms':>25}"
        f" {'then deleting merged-away ms':>29}"
    )
    for n, c in details.get("commit", {}).items():
        lines.append(
            f"{n:>14} {c['plain_ms']:>14.1f} {c['merged_ms']:>15.1f} {c['pyiceberg_ms']:>25.1f}"
            f" {c.get('merged_cleanup_ms', float('nan')):>29.1f}"
        )
    wide = details.get("commit_wide_manifests")
    if wide:
        lines.append(
            f"{wide['tasks']:>9} x {wide['data_files'] // wide['tasks']:<2}f {wide['plain_ms']:>14.1f} "
            f"{wide['merged_ms']:>15.1f} {wide['pyiceberg_ms']:>25.1f}   (partitioned: {wide['data_files']} data files)"
        )
    plan = details.get("plan", {})
    lines.append(
        f"plan_files after {plan.get('tasks')} tasks: merged {result['plan_ms_1000_merged']:.1f} ms, "
        f"unmerged {plan.get('plain_ms', float('nan')):.1f} ms, one append of the same files "
        f"{result['plan_ms_single_append']:.1f} ms"
    )
    o = details.get("overhead", {})
    lines.append(
        f"per-task overhead: {result['per_task_overhead_ms']:.2f} ms/task ({o.get('tasks')} tiny tasks, "
        f"{o.get('job_seconds', 0):.2f}s; fixed job cost {o.get('fixed_job_seconds', 0):.2f}s); coordinator "
        f"{o.get('coordinator_ms_per_task', 0):.2f} ms/task (StartJob {o.get('start_job_rpc_ms', 0):.0f} ms); Redis "
        f"{o.get('redis_calls_per_task', 0):.1f} calls, {o.get('redis_server_ms_per_task', 0):.2f} ms server time per task"
    )
    by_role = o.get("cpu_ms_per_task_by_role", {})
    if by_role:
        lines.append(
            f"  CPU per task {o.get('cpu_ms_per_task', 0):.1f} ms: "
            + ", ".join(f"{k} {v:.2f}" for k, v in by_role.items() if v >= 0.005)
        )
    lines.append(
        f"peak RSS converting {result['worker_rss_source_mb']:.0f} MiB of CSV: worker {result['worker_peak_rss_mb']:.0f} MiB, "
        f"pyiceberg {result['pyiceberg_peak_rss_mb']:.0f} MiB"
    )
    lines.append("")
    lines.append("targets (issue 8):")
    for name, measured, met in targets(result, full):
        lines.append(f"  [{'met' if met else 'MISSED'}] {name}: {measured}")
    return "\n".join(lines)


def plot(details: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    commit = details.get("commit", {})
    if not commit:
        return False
    ns = sorted(int(n) for n in commit)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in (("plain_ms", "Floe commit, merging off"), ("merged_ms", "Floe commit, merging on"),
                       ("pyiceberg_ms", "pyiceberg fast append, same files")):
        ax.plot(ns, [commit[str(n)][key] for n in ns], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("task manifests in the job")
    ax.set_ylabel("commit time (ms)")
    ax.axhline(200, color="grey", linestyle=":", label="target at 1,000 tasks: 200 ms")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --- main ----------------------------------------------------------------------------------------


def _daft_available() -> bool:
    try:
        import daft  # noqa: F401
    except ImportError:
        return False
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="~300 MiB of CSV (the default)")
    size.add_argument("--full", action="store_true", help="~3 GiB of CSV")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of A B C D (at least 1; default 3)")
    ap.add_argument(
        "--out", type=Path, default=None,
        help="the result (default bench/results/latest.json; with --full, bench/results/latest-full.json)",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="data and tables (default: a directory under /tmp)")
    # smaller settings, for the harness's own tests
    ap.add_argument("--csv-mb", type=float, default=None)
    ap.add_argument("--files-per-host", type=int, default=None)
    ap.add_argument("--commit-tasks", type=str, default=None, help="comma-separated task counts")
    ap.add_argument("--plan-tasks", type=int, default=None)
    ap.add_argument("--overhead-tasks", type=int, default=None)
    ap.add_argument("--rss-mb", type=float, default=None)
    ap.add_argument("--small-files", type=int, default=None, help="tiny files the hosts plan (scale; default 10000)")
    ap.add_argument("--big-mb", type=float, default=None, help="the big CSV one host splits (scale)")
    ap.add_argument("--startjob-tasks", type=int, default=None, help="tasks of the StartJob timed (scale; default 10000)")
    ap.add_argument("--no-daft", action="store_true", help="leave Daft out (only when it is not installed)")
    ap.add_argument("--no-plot", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = PROFILES["full" if args.full else "quick"]
    profile = Profile(
        name=base.name,
        csv_mb=args.csv_mb if args.csv_mb is not None else base.csv_mb,
        files_per_host=args.files_per_host or base.files_per_host,
        commit_counts=[int(x) for x in args.commit_tasks.split(",")] if args.commit_tasks else base.commit_counts,
        plan_tasks=args.plan_tasks or base.plan_tasks,
        overhead_tasks=args.overhead_tasks or base.overhead_tasks,
        rss_mb=args.rss_mb if args.rss_mb is not None else base.rss_mb,
        rounds=args.rounds or base.rounds,
        small_files=args.small_files or base.small_files,
        big_mb=args.big_mb if args.big_mb is not None else base.big_mb,
        startjob_tasks=args.startjob_tasks or base.startjob_tasks,
    )
    if profile.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return 2
    use_daft = not args.no_daft
    if use_daft and not _daft_available():
        print("daft is not installed: pip install -e '.[bench]' (or pass --no-daft)", file=sys.stderr)
        return 2
    if args.out is None:
        args.out = ROOT / "bench" / "results" / ("latest-full.json" if profile.name == "full" else "latest.json")
    workdir = (args.workdir or Path("/tmp") / f"floe-bench-{profile.name}").absolute()
    log(f"profile {profile.name}: {profile.csv_mb:.0f} MiB CSV, {profile.rounds} rounds; work in {workdir}")
    bench = Bench(profile, workdir, use_daft)
    result = bench.run()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    details_path = args.out.with_name(args.out.stem + "-details.json")
    details_path.write_text(json.dumps(_rounded(bench.details), indent=2, default=str) + "\n")
    text = report(result, bench.details, profile.name == "full")
    print()
    print(text)
    if not args.no_plot and plot(bench.details, args.out.with_name("commit.png")):
        log(f"plot: {args.out.with_name('commit.png')}")
    log(f"wrote {args.out} and {details_path} in {bench.phase_seconds.get('total', 0):.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
