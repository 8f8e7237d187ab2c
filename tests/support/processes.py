"""Processes read from /proc (psutil is not a dependency), and the environment of a test's local stack:
shared by tests/test_stack.py, tests/test_redis_launcher.py and tests/test_flower.py."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

# --------------------------------------------------------------------------------------------
# processes, read from /proc (psutil is not a dependency)
# --------------------------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of ``pid`` or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def live(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


def descendants(root: int) -> dict[int, int]:
    """Live descendants of ``root``: pid -> start time (to tell a reused pid apart)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st is None or st[0] == "Z":
            continue
        children.setdefault(st[1], []).append(pid)
        starts[pid] = st[2]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = starts[child]
                todo.append(child)
    return found


def still_running(snapshot: dict[int, int]) -> list[int]:
    return [pid for pid, start in snapshot.items() if (st := proc_stat(pid)) and st[0] != "Z" and st[2] == start]


def mentioning(marker: str) -> list[int]:
    """Live processes whose command line or environment contains ``marker``."""
    needle = marker.encode()
    hits = []
    for pid in all_pids():
        if pid == os.getpid() or not live(pid):
            continue
        for name in ("cmdline", "environ"):
            try:
                if needle in Path(f"/proc/{pid}/{name}").read_bytes():
                    hits.append(pid)
                    break
            except OSError:
                continue
    return hits


def describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = "?"
        out.append(f"{pid}: {cmd.strip()}")
    return "\n".join(out)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())




def stack_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "WORKER_", "ICEBERG_"))}
    env.pop("COORDINATOR_ADDRESS", None)
    env.pop("FLOWER_BASIC_AUTH", None)
    env["FLOE_HOME"] = str(home)
    env["FLOE_WORKER_CONCURRENCY"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env
