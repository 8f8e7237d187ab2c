"""Redis with a password and TLS (rediss://) works for every process: coordinator, workers, beat."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from cryptography.hazmat.primitives import serialization

from app.client import TaskArg
from app.proto_gen.api import common_pb2
from tests.support.certs import make_cert, new_key, pem_key
from tests.support.system import Cluster, free_port, wait_until
from tests.support.tables import make_table, read_ids, rows, write_csv

pytestmark = pytest.mark.integration
PASSWORD = "redis-pass-Zq81"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    ca_key, server_key = new_key(), new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis test CA")])
    pem = serialization.Encoding.PEM
    d = tmp_path / "redis-tls"
    d.mkdir()
    (d / "ca.pem").write_bytes(make_cert("redis test CA", ca_key, ca_name, ca_key, ca=True).public_bytes(pem))
    (d / "server.pem").write_bytes(make_cert("localhost", server_key, ca_name, ca_key, server=True).public_bytes(pem))
    (d / "server.key").write_bytes(pem_key(server_key))
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(d / "server.pem"), "--tls-key-file", str(d / "server.key"),
         "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "no", "--requirepass", PASSWORD,
         "--save", "", "--appendonly", "no", "--dir", str(d)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = (f"rediss://:{quote(PASSWORD)}@127.0.0.1:{port}/0"
           f"?ssl_cert_reqs=required&ssl_ca_certs={quote(str(d / 'ca.pem'))}")

    def up() -> bool:
        try:
            return bool(redis.Redis.from_url(url).ping())
        except redis.RedisError:
            return False

    try:
        wait_until(up, 20, "TLS redis-server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_job_runs_over_tls_redis_with_a_password(tmp_path: Path, tls_redis: str) -> None:
    # A plaintext client (or one without the password) is refused: the URL really carries both.
    with pytest.raises(redis.RedisError):
        redis.Redis.from_url(tls_redis.replace("rediss://", "redis://").split("?")[0]).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(tls_redis.replace(quote(PASSWORD), "wrong")).ping()
    cluster = Cluster(tmp_path / "floe", tls_redis)
    cluster.catalog.create_namespace("demo")
    try:
        make_table(cluster.catalog, "demo.events")
        write_csv(cluster.data_dir("1") / "a.csv", rows(0, 40))
        cluster.start_coordinator()
        cluster.start_worker("1")
        cluster.start_beat()
        with cluster.client() as client:
            reply = client.start_job("demo", "events", tasks=[TaskArg("t1", "1", ["a.csv"])])
        status = cluster.wait_for_state(reply.job_id)
        assert status.state == common_pb2.COMPLETED, cluster.logs()
        assert read_ids(cluster.catalog.load_table("demo.events")) == list(range(40))
        assert PASSWORD not in cluster.logs()
    finally:
        cluster.stop_all()
