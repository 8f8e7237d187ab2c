"""Running the local stack: :func:`run_stack` is ``floe up`` (start, print, supervise until
SIGINT/SIGTERM, a second Ctrl-C kills everything), :func:`local_stack` a started and healthy
stack as a context manager, and :func:`main` the ``python -m app.stack probe`` health check
used by compose.yaml.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from app.stack.errors import StackError
from app.stack.health import grpc_serving
from app.stack.local import LocalStack


def run_stack(hosts: int, flower_port: int) -> int:
    """``floe up``: start the local stack, print what runs, block until SIGINT/SIGTERM.

    A second Ctrl-C while stopping kills every process at once instead of waiting for the grace.
    """
    stack = LocalStack(hosts=hosts, flower_port=flower_port)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            print("floe up: killing everything now", file=sys.stderr, flush=True)
            stack.kill_now()
        stop.set()

    previous: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | None] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, _on_signal)
    try:
        stack.start()
        print("Floe local stack:", flush=True)
        print(stack.describe(), flush=True)
        if stack.flower_auth_generated:
            print(
                f"  Flower login: {stack.flower_auth}  (set FLOWER_BASIC_AUTH=user:password to choose it)",
                flush=True,
            )
        print("Ctrl-C to stop.", flush=True)
        try:
            stack.wait_healthy(timeout=120.0, abort=stop)
            print(f"Healthy: coordinator, {hosts} host(s), Celery workers answering.", flush=True)
        except TimeoutError as exc:
            print(f"floe up: warning: {exc}", file=sys.stderr, flush=True)
        except StackError:
            pass  # a dead child is reported by _supervise; an interrupt ends it there
        return _supervise(stack, stop)
    finally:
        stop.set()  # from here on a signal means "kill now"
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _supervise(stack: LocalStack, stop: threading.Event) -> int:
    while not stop.wait(0.5):
        dead = stack.exited()
        if dead:
            for child, code in dead:
                print(
                    f"floe up: {child.name} exited unexpectedly with code {code}", file=sys.stderr, flush=True
                )
                if child.log_path is not None:
                    print(
                        f"--- last lines of {child.log_path} ---\n{child.log_tail()}",
                        file=sys.stderr,
                        flush=True,
                    )
            print("floe up: stopping the rest", file=sys.stderr, flush=True)
            return 1
    print("Stopping...", flush=True)
    stack.stop()
    print("Stopped.", flush=True)
    return 0


@contextlib.contextmanager
def local_stack(**kwargs: Any) -> Iterator[LocalStack]:
    """``with local_stack(hosts=2) as stack:`` — started and healthy, stopped on exit."""
    with LocalStack(**kwargs) as stack:
        stack.wait_healthy()
        yield stack


def main(argv: list[str] | None = None) -> int:
    """``python -m app.stack probe HOST:PORT [SERVICE]``: exit 0 when the gRPC health check is SERVING.

    Used as the container health check in compose.yaml (the image has no grpc_health_probe).
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or args[0] != "probe":
        print("usage: python -m app.stack probe HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    service = args[2] if len(args) == 3 else ""
    return 0 if grpc_serving(args[1], service, timeout=3.0) else 1
