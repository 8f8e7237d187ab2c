"""Command lines of Floe's Celery processes, for the CLI, the local stack and the test harnesses.

Kept apart from :mod:`app.celery_app` so building a command line does not import Celery.
"""

from __future__ import annotations

import sys


def celery_argv(*args: str) -> list[str]:
    """``python -m celery -A app.celery_app ARGS...`` with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", "app.celery_app", *args]


def celery_worker_argv(worker_id: str, concurrency: int | None = None, node_name: str | None = None) -> list[str]:
    """A host's Celery worker: its own queue ``host-<id>`` plus ``control``, task events on."""
    argv = celery_argv(
        "worker", "-Q", f"host-{worker_id},control", "-n", node_name or f"floe-{worker_id}@%h", "-E",
        "--loglevel", "INFO",
    )
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return argv
