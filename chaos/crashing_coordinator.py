"""``python -m chaos.crashing_coordinator [--die-at PHASE]``: the real ``floe coordinator``, SIGKILLed
inside a commit.

The only difference from ``floe coordinator``: at one step of the commit path this process kills
itself with SIGKILL. A ``CommitJob`` sent to it therefore runs the product's whole commit path (the
commit lease, COMMITTING, the snapshot protocol) and dies exactly there, deterministically:

- ``before-catalog``: the manifest list is written, the catalog's ``commit_table`` not called yet;
- ``in-catalog``: the catalog call is under way and has not landed — for a SQL catalog, the UPDATE of
  the table's metadata pointer is executed and the transaction not committed (SQLite and PostgreSQL
  roll it back when the connection dies); SQL catalogs only (for a REST catalog the chaos case
  ``commit_in_flight_sigkill`` holds the request in a proxy and kills the coordinator meanwhile);
- ``after-catalog`` (the default): the catalog accepted the snapshot, the job is not marked COMPLETED
  (``JobStore.complete`` is the step that dies).
- ``mid-dispatch``: not a commit: after StartJob has answered, the coordinator's dispatcher publishes
  the first chunk of a job's messages (and its cursor), then the process dies a second later, the rest
  of the job unpublished and its dispatch lease held (app/jobs/dispatch.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

PHASES = ("before-catalog", "in-catalog", "after-catalog", "mid-dispatch")
_inside_commit = threading.local()


def _die(where: str) -> None:
    print(f"chaos: SIGKILL {where}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def _patch_commit_table(phase: str) -> None:
    from pyiceberg.catalog.rest import RestCatalog
    from pyiceberg.catalog.sql import SqlCatalog

    for cls in (SqlCatalog, RestCatalog):
        real = cls.commit_table

        def commit_table(self: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            if phase == "before-catalog":
                _die("before the catalog's commit_table")
            _inside_commit.active = True
            try:
                return _real(self, *args, **kwargs)
            finally:
                _inside_commit.active = False

        cls.commit_table = commit_table  # type: ignore[method-assign]


def _patch_sql_commit() -> None:
    from sqlalchemy.orm import Session

    real = Session.commit

    def commit(self: Session) -> None:
        if getattr(_inside_commit, "active", False):
            _die("inside the catalog's commit transaction, before it committed")
        real(self)

    Session.commit = commit  # type: ignore[method-assign]


def _patch_complete() -> None:
    from app.jobs.store import JobStore

    def complete(self: JobStore, job_id: str, snapshot_id: int | None, lease: str | None = None) -> bool:
        _die(f"after the catalog committed snapshot {snapshot_id} of job {job_id}, before COMPLETED")
        return False

    JobStore.complete = complete  # type: ignore[method-assign]


def _patch_dispatch() -> None:
    import time

    from app.jobs.dispatch_store import DispatchStore

    real = DispatchStore.dispatch_publish

    def dispatch_publish(self: DispatchStore, job_id: str, *args: Any, **kwargs: Any) -> tuple[str, str]:
        outcome = real(self, job_id, *args, **kwargs)
        time.sleep(1.0)  # StartJob's answer is long gone
        _die(f"after publishing the first chunk of job {job_id}: {outcome}")
        return outcome

    DispatchStore.dispatch_publish = dispatch_publish  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.crashing_coordinator")
    parser.add_argument("--die-at", choices=PHASES, default="after-catalog")
    phase = parser.parse_args(argv).die_at
    if phase == "mid-dispatch":
        _patch_dispatch()
    elif phase == "after-catalog":
        _patch_complete()
    else:
        _patch_commit_table(phase)
        if phase == "in-catalog":
            _patch_sql_commit()
    from app.cli import main as floe_main

    return floe_main(["coordinator"])


if __name__ == "__main__":
    sys.exit(main())
