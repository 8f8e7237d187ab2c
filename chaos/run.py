"""``python -m chaos.run [--runs N] [--topology file-sql|s3-rest] [--cases a,b] [--update-doc RELIABILITY.md]``:
the fault matrix, N times, on one topology (chaos/topology.py).

Prints one row per case — runs, jobs, rows expected and found, duplicate rows, leftover data files,
time per run and pass/fail — then the failures with their reasons. Each run of a case gets a fresh
cluster under ``--workdir``; a passing run's directory is deleted, a failing one's kept (logs, table,
Redis data). Exit status 1 when any run failed. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from chaos.cases import CASES, CaseResult, cases_for, run_case
from chaos.netns import unavailable_reason
from chaos.topology import TOPOLOGIES


def doc_markers(topology: str) -> tuple[str, str]:
    """The comments that enclose a topology's table in the Markdown file."""
    return f"<!-- chaos-table:{topology}:start -->", f"<!-- chaos-table:{topology}:end -->"


@dataclass
class Row:
    case: str
    results: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    def total(self, attr: str) -> int:
        return sum(int(getattr(r, attr)) for r in self.results)

    def cells(self) -> list[str]:
        times = [r.seconds for r in self.results]
        runs = len(self.results)
        verdict = "pass" if self.passed == runs else f"FAIL ({runs - self.passed}/{runs})"
        return [
            self.case,
            str(runs),
            str(self.total("jobs")),
            f"{self.total('rows_expected'):,}",
            f"{self.total('rows_found'):,}",
            str(self.total("duplicates")),
            str(self.total("leftover_files")),
            f"{sum(times) / runs:.1f} ({min(times):.1f}–{max(times):.1f})",
            verdict,
        ]


HEADER = [
    "case",
    "runs",
    "jobs",
    "rows expected",
    "rows found",
    "duplicates",
    "leftover files",
    "seconds/run avg (min–max)",
    "result",
]


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "?"


def topology_versions(topology: str, names: list[str]) -> str:
    """The servers the topology ran on, with their versions."""
    parts = []
    if topology == "s3-rest":
        from tests.support.seaweedfs import find_weed

        weed = find_weed()
        parts.append(f"SeaweedFS {_version([weed, 'version']) if weed else '(not installed)'}")
    if "postgres_restart" in names:
        version = _version(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SHOW server_version"])
        parts.append(f"PostgreSQL {version}")
    return "; ".join(parts)


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        mem_kb = int(fh.readline().split()[1])
    try:
        redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[
            2
        ]
    except (OSError, IndexError):
        redis = "?"
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_kb / 1024 / 1024:.0f} GiB RAM; Linux {platform.release()}; "
        f"Python {platform.python_version()}; redis-server {redis.removeprefix('v=')}"
    )


def update_doc(path: Path, block: str, topology: str = "file-sql") -> None:
    """Replace the topology's table in ``path`` (appended, with its markers, when there is none yet)."""
    start, end = doc_markers(topology)
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        text = re.sub(
            re.escape(start) + r".*?" + re.escape(end),
            lambda _m: f"{start}\n{block}\n{end}",
            text,
            flags=re.S,
        )
    else:
        text += f"\n{start}\n{block}\n{end}\n"
    path.write_text(text)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="how many times to run the matrix (default 3)")
    parser.add_argument(
        "--topology",
        choices=TOPOLOGIES,
        default="file-sql",
        help="file-sql: SQLite catalog + file:// warehouse (default); s3-rest: SeaweedFS S3 + REST catalog",
    )
    parser.add_argument("--cases", default="", help=f"comma-separated subset of: {', '.join(CASES)}")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where clusters live (default: a temp dir)"
    )
    parser.add_argument(
        "--update-doc", type=Path, default=None, help="write the table into this Markdown file"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.cases.split(",") if n.strip()] or cases_for(args.topology)
    unknown = [n for n in names if n not in CASES]
    if unknown or args.runs < 1:
        parser.error(f"unknown cases {unknown}" if unknown else "--runs must be at least 1")
    elsewhere = [n for n in names if args.topology not in CASES[n].topologies]
    if elsewhere:
        parser.error(f"cases {elsewhere} do not run on the {args.topology} topology")
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every cluster and namespace is cleaned up
    signal.signal(signal.SIGTERM, _interrupt)
    reason = unavailable_reason()
    if reason:
        print(f"chaos: cannot create network namespaces: {reason}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="floe-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    rows = {n: Row(n) for n in names}
    for run in range(1, args.runs + 1):
        for name in names:
            home = workdir / args.topology / f"run{run}" / name
            result = run_case(name, home, args.topology)
            rows[name].results.append(result)
            verdict = "pass" if result.passed else "FAIL"
            extra = f" — {'; '.join(result.notes)}" if result.notes else ""
            print(f"[run {run}/{args.runs}] {name}: {verdict} in {result.seconds:.1f}s{extra}", flush=True)
            if result.passed:
                shutil.rmtree(home, ignore_errors=True)
            else:
                print("    " + result.error.splitlines()[0][:2000], flush=True)
    table = markdown_table(list(rows.values()))
    failures = [r for row in rows.values() for r in row.results if not r.passed]
    command = f"python -m chaos.run --runs {args.runs} --topology {args.topology}" + (
        f" --cases {','.join(names)}" if args.cases else ""
    )
    servers = topology_versions(args.topology, names)
    block = "\n".join(
        [
            f"Latest run: {started:%Y-%m-%d %H:%M} UTC, `{command}` "
            f"({sum(len(r.results) for r in rows.values())} case runs, "
            f"{(dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60:.1f} min).",
            f"Machine: {machine()}" + (f"; {servers}." if servers else "."),
            "",
            table,
        ]
    )
    if failures:
        block += "\n\nFailures (first line of each reason):\n\n" + "\n".join(
            f"- `{r.case}`: {r.error.splitlines()[0][:600]}" for r in failures
        )
    print()
    print(block)
    if failures:
        print(f"\nlogs of failed runs are kept under {workdir}")
    if args.update_doc:
        update_doc(args.update_doc, block, args.topology)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
