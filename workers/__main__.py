"""A worker host: ``python -m workers`` (what ``floe worker`` runs).

Starts the host's Celery worker (queue ``host-<WORKER_ID>`` plus ``control``) as a child process and
serves the ``api.Worker`` facade on ``WORKER_ADDRESS`` until SIGTERM or Ctrl-C, then stops the child.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from app.errors import ConfigError, FloeError
from app.grpc.server import create_server, serve_until_signalled
from app.logs import configure_logging
from app.processes import celery_worker_argv
from app.proto_gen.api import worker_pb2_grpc
from app.runtime import get_service
from app.settings import get_settings
from workers.facade import WorkerServicer


def run_host(concurrency: int = 0) -> int:
    settings = get_settings()
    if not settings.worker_id:
        raise ConfigError("WORKER_ID is required for `floe worker` (it names the host queue host-<WORKER_ID>)")
    if settings.worker_data_base is None or not settings.worker_data_base.is_dir():
        raise ConfigError(f"WORKER_DATA_BASE={settings.worker_data_base} must be an existing directory")
    worker_id = settings.worker_id
    celery_proc = subprocess.Popen(
        celery_worker_argv(worker_id, concurrency or settings.worker_concurrency or None)
    )
    service = get_service()

    def register(server: object) -> str:
        worker_pb2_grpc.add_WorkerServicer_to_server(WorkerServicer(service, worker_id), server)
        return "api.Worker"

    try:
        server, port = create_server(settings.worker_address, [register])
        serve_until_signalled(server, f"worker {worker_id}", port)
    finally:
        celery_proc.terminate()
        try:
            celery_proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            celery_proc.kill()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=0, help="Celery worker processes (default: cores)")
    args = parser.parse_args(argv)
    try:
        configure_logging()
        return run_host(args.concurrency)
    except FloeError as exc:
        print(f"floe: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
