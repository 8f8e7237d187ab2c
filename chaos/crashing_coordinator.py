"""``python -m chaos.crashing_coordinator``: the real ``floe coordinator``, SIGKILLed inside a commit.

The only difference from ``floe coordinator``: ``JobStore.complete`` — the step right after the
catalog accepted the snapshot — kills this process with SIGKILL instead. A ``CommitJob`` sent to it
therefore runs the product's whole commit path (commit lock, COMMITTING, ``commit_table``) and dies
exactly "after the catalog call, before the job is marked COMPLETED", deterministically.
"""

from __future__ import annotations

import os
import signal
import sys

from app.jobs.store import JobStore


def _die(self: JobStore, job_id: str, snapshot_id: int | None) -> bool:
    print(f"chaos: catalog committed snapshot {snapshot_id} of job {job_id}; SIGKILL now", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def main() -> int:
    JobStore.complete = _die  # type: ignore[method-assign]
    from app.cli import main as floe_main

    return floe_main(["coordinator"])


if __name__ == "__main__":
    sys.exit(main())
