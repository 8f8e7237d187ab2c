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
import sys
from pathlib import Path

from bench.phases import Bench, rounded
from bench.profiles import PROFILES, ROOT, Profile, log
from bench.report import plot, report


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
    details_path.write_text(json.dumps(rounded(bench.details), indent=2, default=str) + "\n")
    text = report(result, bench.details, profile.name == "full")
    print()
    print(text)
    if not args.no_plot and plot(bench.details, args.out.with_name("commit.png")):
        log(f"plot: {args.out.with_name('commit.png')}")
    log(f"wrote {args.out} and {details_path} in {bench.phase_seconds.get('total', 0):.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
