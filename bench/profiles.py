"""What a benchmark run measures: its profiles (quick, full), the contenders and workloads, and its log."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

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
