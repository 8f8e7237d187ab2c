"""TLS, mTLS and the bearer token on a real gRPC server; tests make their own CA."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.errors import ConfigError
from app.grpc.server import create_server
from app.proto_gen.api import coordinator_pb2, coordinator_pb2_grpc
from app.security import TransportSecurity
from app.settings import security_from_env
from tests.support.certs import make_cert, new_key, pem_key

TOKEN = "s3cret-token-0123456789"


@dataclass
class Pki:
    ca: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes
    rogue_cert: bytes
    rogue_key: bytes


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca_key, rogue_ca_key = new_key(), new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "floe test CA")])
    rogue_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue CA")])
    ca = make_cert("floe test CA", ca_key, ca_name, ca_key, ca=True)
    server_key, client_key, rogue_key = new_key(), new_key(), new_key()
    pem = serialization.Encoding.PEM
    return Pki(
        ca=ca.public_bytes(pem),
        server_cert=make_cert("localhost", server_key, ca_name, ca_key, server=True).public_bytes(pem),
        server_key=pem_key(server_key),
        client_cert=make_cert("client", client_key, ca_name, ca_key).public_bytes(pem),
        client_key=pem_key(client_key),
        rogue_cert=make_cert("rogue", rogue_key, rogue_name, rogue_ca_key).public_bytes(pem),
        rogue_key=pem_key(rogue_key),
    )


class EchoCoordinator(coordinator_pb2_grpc.CoordinatorServicer):
    def GetJobStatus(self, request, context):  # type: ignore[no-untyped-def]
        from app.proto_gen.api import common_pb2

        return common_pb2.JobStatus(job_id=request.job_id)


def serve(security: TransportSecurity) -> Iterator[int]:
    def register(server: grpc.Server) -> str:
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(EchoCoordinator(), server)
        return "api.Coordinator"

    server, port = create_server("127.0.0.1:0", [register], security=security)
    server.start()
    try:
        yield port
    finally:
        server.stop(0).wait()


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[int]:
    yield from serve(TransportSecurity(pki.server_cert, pki.server_key, pki.ca, TOKEN))


def status(channel: grpc.Channel) -> str:
    stub = coordinator_pb2_grpc.CoordinatorStub(channel)
    return stub.GetJobStatus(coordinator_pb2.GetJobStatusRequest(job_id="x"), timeout=5).job_id


def test_mtls_with_token_accepts_the_right_client(pki: Pki, mtls_server: int) -> None:
    client = TransportSecurity(pki.client_cert, pki.client_key, pki.ca, TOKEN)
    with client.channel(f"localhost:{mtls_server}") as channel:
        assert status(channel) == "x"


@pytest.mark.parametrize("token, message", [(None, "missing bearer token"), ("wrong-token-0123456789", "invalid bearer token")])
def test_missing_or_wrong_token_is_unauthenticated(pki: Pki, mtls_server: int, token: str | None, message: str) -> None:
    client = TransportSecurity(pki.client_cert, pki.client_key, pki.ca, token)
    with client.channel(f"localhost:{mtls_server}") as channel, pytest.raises(grpc.RpcError) as info:
        status(channel)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == message


def test_health_and_reflection_stay_open_without_token(pki: Pki, mtls_server: int) -> None:
    client = TransportSecurity(pki.client_cert, pki.client_key, pki.ca, None)
    with client.channel(f"localhost:{mtls_server}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="api.Coordinator"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for r in replies for s in r.list_services_response.service}
        assert "api.Coordinator" in names


@pytest.mark.parametrize("who", ["no client certificate", "certificate from another CA", "plaintext"])
def test_mtls_refuses_clients_without_a_trusted_certificate(pki: Pki, mtls_server: int, who: str) -> None:
    if who == "plaintext":
        channel = TransportSecurity(token=TOKEN).channel(f"localhost:{mtls_server}")
    elif who == "no client certificate":
        channel = TransportSecurity(None, None, pki.ca, TOKEN).channel(f"localhost:{mtls_server}")
    else:
        channel = TransportSecurity(pki.rogue_cert, pki.rogue_key, pki.ca, TOKEN).channel(f"localhost:{mtls_server}")
    with channel, pytest.raises(grpc.RpcError) as info:
        status(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_without_client_auth(pki: Pki) -> None:
    for port in serve(TransportSecurity(pki.server_cert, pki.server_key, None, None)):
        with TransportSecurity(None, None, pki.ca, None).channel(f"localhost:{port}") as channel:
            assert status(channel) == "x"


def test_security_settings_are_validated(tmp_path: Path, pki: Pki) -> None:
    cert = tmp_path / "c.pem"
    cert.write_bytes(pki.server_cert)
    with pytest.raises(ConfigError, match="FLOE_TLS_CERT and FLOE_TLS_KEY must be set together"):
        security_from_env({"FLOE_TLS_CERT": str(cert)})
    with pytest.raises(ConfigError, match=r"FLOE_TLS_CA='/nope.pem' cannot be read"):
        security_from_env({"FLOE_TLS_CA": "/nope.pem"})
    with pytest.raises(ConfigError, match="at least 16 characters"):
        security_from_env({"FLOE_AUTH_TOKEN": "short"})
    assert security_from_env({"FLOE_AUTH_TOKEN": TOKEN}).token == TOKEN
