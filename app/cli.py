"""`floe`: run the processes, drive jobs, make tables.

floe coordinator | worker | beat | flower | up       processes (see README for the environment)
floe job start|status|watch|commit|cancel|list       talk to the coordinator
floe hosts                                           the worker hosts seen recently, live or not
floe table create                                    a table from a schema file or a sample source
floe demo                                            the end-to-end demo behind `make demo`
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from app.errors import FloeError
from app.processes import celery_argv

log = logging.getLogger("floe")


def _configure_logging() -> None:
    from app.logs import configure_logging

    configure_logging()


def cmd_coordinator(_args: argparse.Namespace) -> int:
    from app.grpc.coordinator import CoordinatorServicer
    from app.grpc.server import create_server, serve_until_signalled
    from app.proto_gen.api import coordinator_pb2_grpc
    from app.runtime import get_service
    from app.settings import get_settings

    settings = get_settings()
    service = get_service()

    servicer = CoordinatorServicer(service)
    service.dispatcher.start()  # StartJob answers first; its messages are published in the background

    def register(server: object) -> str:
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(servicer, server)
        return "api.Coordinator"

    server, port = create_server(settings.coordinator_address, [register])
    # Everything imported and built so far lives as long as the process: out of the collector's sight,
    # a full collection (which a StartJob of 10,000 tasks may trigger) scans only what requests make.
    gc.freeze()
    if settings.metrics_port:
        from app.metrics import start_metrics_server

        start_metrics_server(service.store, settings.metrics_port)
    try:
        serve_until_signalled(server, "coordinator", port)
    finally:
        servicer.close()
        service.dispatcher.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """A host: ``python -m workers`` in this process's place (Celery worker + the api.Worker facade)."""
    argv = [sys.executable, "-m", "workers"]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
    return 0  # not reached


def cmd_beat(_args: argparse.Namespace) -> int:
    import tempfile

    from app.settings import get_settings

    get_settings()  # refuse bad configuration before starting
    # The schedule only holds last-run times of two interval tasks: a private file, removed at exit,
    # so two beats (safe by design) never share one and nothing is left behind.
    with tempfile.TemporaryDirectory(prefix="floe-beat-") as tmp:
        argv = celery_argv("beat", "--loglevel", "INFO", "-s", str(Path(tmp) / "celerybeat-schedule"))
        proc = subprocess.Popen(argv)
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            return proc.wait()


def cmd_flower(args: argparse.Namespace) -> int:
    argv = celery_argv("flower", f"--port={args.port}")
    # Flower reads FLOWER_BASIC_AUTH from its environment: never put it on a command line (ps shows it).
    return subprocess.call(argv)


def cmd_up(args: argparse.Namespace) -> int:
    from app.stack import run_stack

    return run_stack(hosts=args.hosts, flower_port=args.flower_port)


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    from app.client_cli import add_hosts_command, add_job_commands, add_table_commands

    parser = argparse.ArgumentParser(
        prog="floe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("coordinator", help="run the gRPC coordinator").set_defaults(func=cmd_coordinator)
    worker = sub.add_parser(
        "worker", help="run a host: Celery worker on host-<WORKER_ID> + api.Worker facade"
    )
    worker.add_argument("--concurrency", type=int, default=0, help="Celery worker processes (default: cores)")
    worker.set_defaults(func=cmd_worker)
    sub.add_parser("beat", help="run Celery beat (watchdog + auto-committer)").set_defaults(func=cmd_beat)
    flower = sub.add_parser("flower", help="run the Flower dashboard")
    flower.add_argument("--port", type=int, default=5555)
    flower.set_defaults(func=cmd_flower)
    up = sub.add_parser("up", help="run the whole local stack until Ctrl-C")
    up.add_argument("--hosts", type=int, default=2, help="number of host workers (default 2)")
    up.add_argument("--flower-port", type=int, default=5555)
    up.set_defaults(func=cmd_up)
    sub.add_parser("demo", help="start the stack, run a job across two hosts, print the result").set_defaults(
        func=cmd_demo
    )
    add_job_commands(sub)
    add_hosts_command(sub)
    add_table_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _configure_logging()
        return int(args.func(args) or 0)
    except FloeError as exc:
        print(f"floe: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - gRPC errors reach the user as code + message
        import grpc

        if isinstance(exc, grpc.RpcError):
            code = exc.code()  # type: ignore[attr-defined]
            print(f"floe: {code.name if code else 'ERROR'}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
            return 2
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
