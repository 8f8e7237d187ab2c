"""A benchmark result judged and shown: the targets of issue 8 (and later issues), the printed report, the
commit-time plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.profiles import WORKLOADS


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
    if o.get("speed_probe_ms"):
        lines.append(
            f"  speed probe {' / '.join(f'{v:.0f}' for v in o['speed_probe_ms'])} ms before / after the job "
            "(a fixed pure-Python loop, bench/machine.py: CPU-bound figures scale with it)"
        )
    if o.get("file_create_us"):
        lines.append(
            f"  creating a file beside the table {' / '.join(f'{v:.0f}' for v in o['file_create_us'])} µs of CPU "
            "before / after the job (bench/machine.py; a tiny task creates one: its data file)"
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
