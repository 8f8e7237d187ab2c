"""A benchmark run's phases: set-up, warm-up and rounds (:mod:`bench.rounds`), commit and planning,
per-task overhead, scale (:mod:`bench.scale`), memory; then the result (``latest.json``'s keys) and
its details."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.checks import check_table, drop_table
from bench.machine import (
    file_create_us,
    foreign_cores,
    loadavg,
    machine,
    machine_busy_seconds,
    product_version,
    speed_probe_ms,
)
from bench.profiles import CONTENDERS, NAMESPACE, ROOT, WORKLOADS, MiB, Profile, log
from bench.rounds import ContenderRounds, Results, median, ratio


class Bench(ContenderRounds):
    """One benchmark run: its phases in order, each timed, and the result they add up to."""

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
        probe_before = speed_probe_ms()
        # the new probe folder lands beside the table's, where its files' inodes come from
        beside = Path(self.catalog.load_table(f"{NAMESPACE}.overhead").location().removeprefix("file://")).parent
        create_before, probe_dir_before = file_create_us(beside)
        before = floe.redis_commandstats()
        cpu_before = floe.cpu_by_role()
        busy_before, own_before = machine_busy_seconds(), time.process_time()
        job = floe.run_job(NAMESPACE, "overhead", tasks)
        cpu_after = floe.cpu_by_role()
        stack_cpu = sum(cpu_after.values()) - sum(cpu_before.values())
        others = foreign_cores(busy_before, stack_cpu + time.process_time() - own_before, job.seconds)
        after = floe.redis_commandstats()
        probe_after = speed_probe_ms()
        create_after, probe_dir_after = file_create_us(beside)
        shutil.rmtree(probe_dir_before)
        shutil.rmtree(probe_dir_after)
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
            # how fast the vCPU ran just before and after (bench/machine.py): read the figures against it
            "speed_probe_ms": [round(probe_before, 1), round(probe_after, 1)],
            # cores kept busy meanwhile by neither the stack nor the bench (the kernel's writeback, others)
            "foreign_cores": round(others, 2),
            # CPU µs to create an empty file beside the table, before / after (bench/machine.py)
            "file_create_us": [round(create_before, 1), round(create_after, 1)],
        }
        log(f"per-task overhead: {res['per_task_ms']:.1f} ms/task over {n} tasks ({job.seconds:.1f}s); StartJob "
            f"{res['start_job_rpc_ms']:.0f} ms ({res['coordinator_ms_per_task']:.2f} ms/task); Redis "
            f"{res['redis_calls_per_task']:.1f} calls and {res['redis_server_ms_per_task']:.2f} ms server time per task")
        log(f"speed probe (bench/machine.py) {probe_before:.0f} / {probe_after:.0f} ms before / after the job; "
            f"{others:.2f} cores busy with other work meanwhile; creating a file beside the table "
            f"{create_before:.0f} / {create_after:.0f} µs of CPU")
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
                "floor_s": median(t["floor"]),
                "pyiceberg_s": median(t["pyiceberg"]),
                "daft_s": median(t["daft"]),
                "floe_s": median(t["floe"]),
                "floe_vs_floor": ratio(t["floe"], t["floor"]),
                "floe_vs_pyiceberg": ratio(t["floe"], t["pyiceberg"]),
                "floe_vs_daft": ratio(t["floe"], t["daft"]),
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
        out = rounded(out)
        self.details["rounds"] = {
            "times": results.times,
            "cpu_seconds": results.cpu,
            "foreign_cores_busy": results.foreign,
            "foreign_cores_medians": {w: {c: median(results.foreign[w][c]) for c in CONTENDERS} for w in WORKLOADS},
            "cpu_medians": {w: {c: median(results.cpu[w][c]) for c in CONTENDERS} for w in WORKLOADS},
            "floor_vs_pyiceberg": {w: ratio(results.times[w]["floor"], results.times[w]["pyiceberg"]) for w in WORKLOADS},
            "floor_vs_daft": {w: ratio(results.times[w]["floor"], results.times[w]["daft"]) for w in WORKLOADS},
            "floor_variants": results.floor_variants,
            "floe_start_job_rpc_s": results.floe_start_rpc,
        }
        self.details["dataset"] = {"rows": ds.rows, "csv_mb": ds.csv_bytes / MiB, "parquet_mb": ds.parquet_bytes / MiB,
                                   "files_per_host": self.profile.files_per_host, "hosts": len(ds.hosts)}
        return out



def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if abs(value) < 10 else round(value, 1)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value
