"""What ``python -m bench.load`` measures and checks, and how it reports it (bench/load.py runs it)."""

from __future__ import annotations

import os
import platform
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from app.proto_gen.api import common_pb2

NAMESPACE, TABLE = "load", "events"


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
# checks
# --------------------------------------------------------------------------------------------


def verify(
    catalog: Any, probe_jobs: int, final: dict[str, common_pb2.JobStatus], config: Config
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
        "probe_jobs": probe_jobs,
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
