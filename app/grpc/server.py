"""Building and running gRPC servers: health checking, reflection and the error interceptor."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from app.grpc.interceptor import ErrorInterceptor
from app.security import TransportSecurity

log = logging.getLogger("floe.grpc")
Registrar = Callable[[grpc.Server], str]  # registers a servicer, returns its full service name


def create_server(
    address: str,
    registrars: list[Registrar],
    max_workers: int = 32,
    security: TransportSecurity | None = None,
) -> tuple[grpc.Server, int]:
    """A ready (not yet started) server on ``address``; returns it and the bound port.

    ``security`` (default: the settings') adds TLS / mTLS and the bearer-token check.
    """
    if security is None:
        from app.settings import get_settings

        security = get_settings().security
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="floe-grpc"),
        interceptors=[*security.interceptors(), ErrorInterceptor()],
        options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
    )
    names = [register(server) for register in registrars]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    credentials = security.server_credentials()
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port


def serve_until_signalled(server: grpc.Server, name: str, port: int, grace: float = 10.0) -> None:
    """Start ``server`` and block until SIGTERM or SIGINT, then stop it gracefully."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("%s received signal %d, shutting down", name, signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.start()
    log.info("%s listening on port %d", name, port)
    print(f"{name} listening on port {port}", flush=True)
    stop.wait()
    server.stop(grace).wait()
