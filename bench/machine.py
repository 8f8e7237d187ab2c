"""The machine a benchmark runs on: its description, the product version measured, and its load."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench.profiles import ROOT


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


def foreign_cores(busy_before: float, own_cpu: float, seconds: float) -> float:
    """Cores kept busy by processes other than the contender's during its run (others' load on a shared machine)."""
    if seconds <= 0:
        return float("nan")
    return max(0.0, (machine_busy_seconds() - busy_before - own_cpu) / seconds)


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def speed_probe_ms(repeats: int = 5) -> float:
    """CPU milliseconds of a fixed pure-Python loop, the best of ``repeats``: how fast this vCPU runs right
    now. Shared VMs here ran it in 44 to 177 ms within one hour (2026-11-26), idle or not: CPU-bound
    figures measured beside the probe scale with it."""
    import time

    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.process_time() - started)
    return best * 1000


def file_create_us(directory: Path, files: int = 200) -> tuple[float, Path]:
    """CPU microseconds per empty file created in a new folder below ``directory``: how dear creating a
    file is there right now (a tiny task creates one, its data file: its manifest is kept inline). On a
    journal-less ext4, as on these VMs, it rises several-fold for a minute or more after many deletions
    nearby: the inode allocator skips recently
    freed inodes one lookup at a time (BENCHMARKS.md, stop 23). -> (the figure, the folder made, for the
    caller to remove once the figures it explains are taken: deleting now would make creation dearer)."""
    import tempfile
    import time

    probe = Path(tempfile.mkdtemp(prefix="create-probe-", dir=directory))
    started = time.process_time()
    for i in range(files):
        os.close(os.open(probe / f"p{i}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
    return (time.process_time() - started) * 1e6 / files, probe
