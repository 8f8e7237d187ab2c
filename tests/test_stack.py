"""The local stack: `LocalStack` and `floe up` (compose.yaml and the redis-server launcher: tests/test_redis_launcher.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.stack import (
    LocalStack,
    StackError,
    free_port,
    free_port_block,
    grpc_serving,
)
from tests.support.processes import (
    descendants,
    describe,
    kill_all,
    mentioning,
    stack_env,
    still_running,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent




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



@pytest.fixture
def floe_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "floe-home"
    yield home
    leftovers = mentioning(str(home))
    kill_all(leftovers)  # never leave processes behind, even when the test failed


@pytest.mark.integration
def test_local_stack_two_hosts_healthy_then_stops_everything(floe_home: Path) -> None:
    before = descendants(os.getpid())
    stack = LocalStack(
        hosts=2,
        env=stack_env(floe_home),
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
        running = set(descendants(os.getpid())) - set(before)
        assert len(running) >= 2 + 2 * 2 + 2  # redis, coordinator, 2 x (floe worker + celery + pool), ...
    assert stack.children == [] and stack.redis is None
    leftovers = [pid for pid in descendants(os.getpid()) if pid not in before]
    assert leftovers == [], describe(leftovers)
    named = mentioning(str(floe_home))
    assert named == [], describe(named)
    # the Redis data directory is kept for the next start
    assert (floe_home / "redis" / "appendonlydir").is_dir()
    assert (floe_home / "logs" / "coordinator.log").exists()


class _FloeUp:
    """`floe up` as a real subprocess, its output collected by a thread."""

    def __init__(self, home: Path, hosts: int) -> None:
        self.home = home
        self.coordinator_port = free_port()
        self.worker_port = free_port_block(hosts)
        env = stack_env(home)
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
        return wait_for(
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
        tree = descendants(up.proc.pid)
        assert len(tree) >= 5, describe(list(tree))
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=30) == 0, up.output
    finally:
        up.close()
    still = still_running(tree)
    assert still == [], describe(still)
    named = mentioning(str(floe_home))
    assert named == [], describe(named)
    assert "Stopped." in up.output


@pytest.mark.integration
def test_floe_up_stops_everything_when_a_child_dies(floe_home: Path) -> None:
    up = _FloeUp(floe_home, hosts=1)
    try:
        assert up.wait_for_line("Healthy", timeout=90), up.output
        tree = descendants(up.proc.pid)
        coordinator = [
            pid for pid in tree if b"app.cli\0coordinator" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(coordinator) == 1, describe(list(tree))
        os.kill(coordinator[0], signal.SIGKILL)
        assert up.proc.wait(timeout=30) == 1, up.output
    finally:
        up.close()
    assert "coordinator exited unexpectedly with code -9" in up.output
    still = still_running(tree)
    assert still == [], describe(still)
    assert mentioning(str(floe_home)) == []


def test_free_ports_are_picked_below_the_kernels_ephemeral_range(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a port the kernel may hand to an outgoing connection could be taken before the server binds it
    from app.stack import ports

    start = ports.ephemeral_start()
    picked = [free_port() for _ in range(30)]
    if start - ports.LISTEN_FLOOR >= 1000:
        assert all(ports.LISTEN_FLOOR <= p < start for p in picked), (start, picked)
    assert all(ports.port_is_free(p) for p in picked)
    base = free_port_block(3)
    assert all(ports.port_is_free(base + i) for i in range(3))
    # a kernel whose ephemeral range leaves no room below it: the kernel's own choice
    (tmp_path / "range").write_text("1024\t65535\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", tmp_path / "range")
    assert ports.ephemeral_start() == 1024 and ports.port_is_free(free_port())
