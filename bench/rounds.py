"""The benchmark's rounds: the floor, pyiceberg, Daft and Floe on the same files, each result checked.

Part of :class:`bench.phases.Bench` (kept apart so each file reads as one concern): the warm-up, one
round of a workload, and :class:`Results`, the times every round adds to.
"""

from __future__ import annotations

import math
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.checks import CheckFailed, check_table, drop_table, footer_rows
from bench.machine import foreign_cores, machine_busy_seconds
from bench.profiles import CONTENDERS, NAMESPACE, WORKLOADS, log


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


def median(values: list[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def ratio(a: list[float], b: list[float]) -> float:
    return median([x / y for x, y in zip(a, b, strict=True) if y])


class ContenderRounds:
    workdir: Path
    use_daft: bool
    catalog: Any  # the run's catalog (loaded by Bench.run)
    catalog_props: dict[str, str]

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
            self.run_all(f"warm_{workload}", workload, warm, rows, "warm/*.csv", floe, contenders)
        log("warm-up done")

    def one_round(self, r: int, workload: str, ds: Any, floe: Any, contenders: dict[str, Any], results: Results) -> None:
        host_files = {h: ds.hosts[h]["csv"] for h in sorted(ds.hosts)}
        timing = self.run_all(f"r{r}_{workload}", workload, host_files, ds.rows, "csv/*.csv", floe, contenders)
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

    def run_all(
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
        foreign_2p = foreign_cores(busy, cpu_2p, seconds_2p)
        self.check_floor(paths_2p, rows, f"floor (two processes) {tag}")
        shutil.rmtree(base, ignore_errors=True)
        jobs = [{**job, "out_dir": job["out_dir"].replace("/p-", "/t-")} for job in jobs]
        busy = machine_busy_seconds()
        seconds_2t, reply = contenders["floor-a"].run({"op": "floor", "jobs": jobs, "partitioned": partitioned})
        foreign_2t = foreign_cores(busy, reply["cpu_s"], seconds_2t)
        self.check_floor(reply["paths"], rows, f"floor (two threads) {tag}")
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
                "foreign_cores": foreign_cores(busy, reply["cpu_s"], seconds),
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
            "foreign_cores": foreign_cores(busy, cpu, job.seconds),
            "files": check_table(self.catalog, f"{NAMESPACE}.{table}", rows),
            "start_rpc": job.start_rpc_seconds,
        }
        drop_table(self.catalog, f"{NAMESPACE}.{table}")
        return out

    @staticmethod
    def check_floor(paths: list[str], rows: int, what: str) -> None:
        found = footer_rows(paths)
        if found != rows:
            raise CheckFailed(f"{what}: expected {rows} rows, the Parquet footers hold {found}")
