"""The local stack itself: :class:`LocalStack` builds, starts, watches and stops Redis (unless
``REDIS_URL`` is set), the coordinator, N hosts, beat and Flower, each a :class:`Child`
process in its own process group with its output in a log file; it decides the ports, the
environment and the Flower login, checks health and describes what runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from app.errors import ConfigError
from app.settings import Settings
from app.stack.errors import StackError
from app.stack.health import _wait_groups_gone, celery_pongs, celery_worker_name_prefix, grpc_serving
from app.stack.ports import _connect_host, _port_open, _split_address, port_is_free
from app.stack.redis_server import RedisProcess, _log_tail, _mask_url, start_redis

STOP_GRACE_SECONDS = 15.0
DEFAULT_WORKER_BASE_PORT = 50052


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path | None = None
    # SIGTERM the group leader only (it shuts its own children down gracefully) or the whole group
    term_group: bool = True
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        out: IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_file = out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def signal_group(self, signum: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def terminate(self) -> None:
        if self.proc is None:
            return
        if self.term_group:
            self.signal_group(signal.SIGTERM)
        elif self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def close_log(self) -> None:
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def log_tail(self, lines: int = 20) -> str:
        return _log_tail(self.log_path, lines) if self.log_path else "(output went to the terminal)"


class LocalStack:
    """Redis (unless ``REDIS_URL`` is set), the coordinator, ``hosts`` workers, beat and Flower.

    Use as a context manager or call :meth:`start` / :meth:`stop`; :meth:`wait_healthy` blocks
    until every gRPC server reports SERVING and every host's Celery worker answers a ping.

    Ports: the coordinator listens on ``coordinator_port`` (else ``COORDINATOR_ADDRESS``, else
    50051); host ``i`` (1-based) on ``worker_base_port + i - 1`` (else the port of
    ``WORKER_ADDRESS`` for host 1, else 50052).
    """

    def __init__(
        self,
        hosts: int = 2,
        flower_port: int = 5555,
        coordinator_port: int | None = None,
        worker_base_port: int | None = None,
        env: Mapping[str, str] | None = None,
        home: Path | None = None,
        concurrency: int | None = None,
        log_dir: Path | None = None,
        capture_logs: bool = True,
        flower: bool = True,
        beat: bool = True,
    ) -> None:
        if hosts < 1:
            raise ConfigError(f"--hosts={hosts}: at least one host is needed")
        given = dict(os.environ if env is None else env)  # the children's environment starts from it
        base_env = dict(given)
        if home is not None:
            base_env["FLOE_HOME"] = str(home)
        settings = Settings.from_env(base_env)
        self.settings = settings
        self.home = settings.home
        base_env["FLOE_HOME"] = str(self.home)
        for var in ("WORKER_ID", "WORKER_DATA_BASE", "WORKER_ADDRESS"):
            base_env.pop(var, None)
        base_env.setdefault("PYTHONUNBUFFERED", "1")

        coord_host, coord_port = _split_address(settings.coordinator_address)
        if coordinator_port is not None:
            coord_port = coordinator_port
        self.coordinator_address = f"{coord_host}:{coord_port}"
        self.coordinator_target = f"{_connect_host(coord_host)}:{coord_port}"
        base_env["COORDINATOR_ADDRESS"] = self.coordinator_address

        worker_host, first_port = _split_address(settings.worker_address)
        if worker_base_port is not None:
            first_port = worker_base_port
        elif not given.get("WORKER_ADDRESS"):
            first_port = DEFAULT_WORKER_BASE_PORT
        self.hosts: list[tuple[str, Path, str]] = []
        for i in range(1, hosts + 1):
            worker_id = str(i)
            self.hosts.append(
                (worker_id, self.home / "hosts" / worker_id, f"{worker_host}:{first_port + i - 1}")
            )

        self.flower_port = flower_port
        self.flower_enabled = flower
        self.beat_enabled = beat
        self.flower_auth_generated = False
        auth = base_env.get("FLOWER_BASIC_AUTH")
        if flower and not auth:
            auth = f"floe:{secrets.token_urlsafe(12)}"
            self.flower_auth_generated = True
        if auth:
            base_env["FLOWER_BASIC_AUTH"] = auth
        self.flower_auth = auth

        self.concurrency = concurrency
        self.log_dir = (log_dir or self.home / "logs") if capture_logs else None
        self._base_env = base_env
        self._external_redis_url = settings.redis_url
        self.redis: RedisProcess | None = None
        self.redis_url: str | None = settings.redis_url
        self.children: list[Child] = []
        self._lock = threading.Lock()

    # -- properties --------------------------------------------------------------------------

    @property
    def worker_targets(self) -> list[str]:
        return [
            f"{_connect_host(_split_address(addr)[0])}:{_split_address(addr)[1]}" for _, _, addr in self.hosts
        ]

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.flower_port}"

    @property
    def masked_redis_url(self) -> str:
        return _mask_url(self.redis_url) if self.redis_url else "-"

    # -- start / stop ------------------------------------------------------------------------

    def _ports_in_use(self) -> list[str]:
        wanted = [("coordinator", _split_address(self.coordinator_address)[1])]
        wanted += [(f"host {wid}", _split_address(addr)[1]) for wid, _, addr in self.hosts]
        if self.flower_enabled:
            wanted.append(("flower", self.flower_port))
        busy = []
        for name, port in wanted:
            if port and not (port_is_free(port, "127.0.0.1") and port_is_free(port, "0.0.0.0")):
                busy.append(f"{name} port {port}")
        return busy

    def _floe(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "app.cli", *args]

    def _build_children(self) -> list[Child]:
        assert self.redis_url is not None
        env = dict(self._base_env, REDIS_URL=self.redis_url)
        log = (lambda name: self.log_dir / f"{name}.log") if self.log_dir else (lambda name: None)
        children = [Child("coordinator", self._floe("coordinator"), env, log("coordinator"))]
        for worker_id, data_dir, address in self.hosts:
            data_dir.mkdir(parents=True, exist_ok=True)
            worker_env = dict(
                env, WORKER_ID=worker_id, WORKER_DATA_BASE=str(data_dir), WORKER_ADDRESS=address
            )
            argv = self._floe("worker")
            if self.concurrency:
                argv += ["--concurrency", str(self.concurrency)]
            # `floe worker` stops its Celery worker itself (warm shutdown lets a running task finish)
            children.append(
                Child(f"host {worker_id}", argv, worker_env, log(f"host-{worker_id}"), term_group=False)
            )
        if self.beat_enabled:
            children.append(Child("beat", self._floe("beat"), env, log("beat")))
        if self.flower_enabled:
            children.append(
                Child("flower", self._floe("flower", "--port", str(self.flower_port)), env, log("flower"))
            )
        return children

    def start(self) -> LocalStack:
        if self.children:
            raise StackError("this stack is already started")
        busy = self._ports_in_use()
        if busy:
            raise StackError(
                f"{', '.join(busy)} already in use (is another `floe up` running?); "
                "choose others with COORDINATOR_ADDRESS, WORKER_ADDRESS (host 1; host i adds i-1) or --flower-port"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            if self._external_redis_url is None:
                # the data directory is kept across restarts: jobs outlive `floe up`
                self.redis = start_redis(self.home / "redis", appendonly=True)
                self.redis_url = self.redis.url
            self.children = self._build_children()
            for child in self.children:
                child.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM every child, wait up to ``grace`` seconds, SIGKILL the groups, stop Redis."""
        with self._lock:
            children = [c for c in self.children if c.proc is not None]
            for child in children:
                child.terminate()
            deadline = time.monotonic() + grace
            for child in children:
                assert child.proc is not None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            # give what the leaders left behind (e.g. `celery beat` under `floe beat`) the rest of the grace
            _wait_groups_gone([c.pid for c in children if c.pid], deadline)
            # whatever is left in any group (a wedged leader, orphaned pool processes) is killed
            for child in children:
                child.signal_group(signal.SIGKILL)
            for child in children:
                assert child.proc is not None
                child.proc.wait()
                child.close_log()
            _wait_groups_gone([c.pid for c in children if c.pid], time.monotonic() + 5.0)
            self.children = []
            if self.redis is not None:
                self.redis.stop()
                self.redis = None
                self.redis_url = self._external_redis_url

    def kill_now(self) -> None:
        """SIGKILL every child's group and Redis at once (safe from a signal handler; no lock)."""
        for child in list(self.children):
            child.signal_group(signal.SIGKILL)
        redis_proc = self.redis.proc if self.redis is not None else None
        if redis_proc is not None and redis_proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                redis_proc.kill()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- watching ----------------------------------------------------------------------------

    def exited(self) -> list[tuple[Child, int]]:
        """Children (and a private Redis) that have exited, with their exit codes."""
        dead = [(c, code) for c in self.children if (code := c.poll()) is not None]
        if self.redis is not None and self.redis.proc is not None:
            code = self.redis.proc.poll()
            if code is not None:
                dead.append((Child("redis", [], {}, self.redis.log_path), code))
        return dead

    def _raise_if_dead(self) -> None:
        dead = self.exited()
        if dead:
            child, code = dead[0]
            raise StackError(f"{child.name} exited with code {code}; last output:\n{child.log_tail()}")

    def health(self, ping_timeout: float = 1.0) -> dict[str, bool]:
        """One round of checks: name -> healthy."""
        status: dict[str, bool] = {"coordinator": grpc_serving(self.coordinator_target, "api.Coordinator")}
        for (worker_id, _, _), target in zip(self.hosts, self.worker_targets, strict=True):
            status[f"host {worker_id} facade"] = grpc_serving(target, "api.Worker")
        pongs: list[str] = []
        if self.redis_url:
            with contextlib.suppress(Exception):
                pongs = celery_pongs(self.redis_url, timeout=ping_timeout)
        for worker_id, _, _ in self.hosts:
            prefix = celery_worker_name_prefix(worker_id)
            status[f"host {worker_id} celery"] = sum(1 for p in pongs if p.startswith(prefix)) == 1
        if self.flower_enabled:
            status["flower"] = _port_open("127.0.0.1", self.flower_port)
        return status

    def wait_healthy(self, timeout: float = 90.0, abort: threading.Event | None = None) -> None:
        """Block until every check passes; StackError if a child dies, TimeoutError on timeout."""
        deadline = time.monotonic() + timeout
        status: dict[str, bool] = {}
        while True:
            self._raise_if_dead()
            if abort is not None and abort.is_set():
                raise StackError("interrupted while waiting for the stack to become healthy")
            status = self.health()
            if all(status.values()):
                return
            if time.monotonic() > deadline:
                waiting = ", ".join(name for name, ok in status.items() if not ok)
                raise TimeoutError(
                    f"the local stack was not healthy within {timeout:.0f}s; not ready: {waiting}"
                )
            if abort is not None:
                abort.wait(0.5)
            else:
                time.sleep(0.5)

    # -- display -----------------------------------------------------------------------------

    def describe(self) -> str:
        rows: list[tuple[str, str]] = [
            (
                "Redis",
                self.masked_redis_url + (f"  (data {self.redis.data_dir})" if self.redis else "  (external)"),
            ),
            ("Coordinator", f"{self.coordinator_target}  (listening on {self.coordinator_address})"),
        ]
        for worker_id, data_dir, address in self.hosts:
            rows.append((f"Host {worker_id}", f"queue host-{worker_id}  worker {address}  data {data_dir}"))
        if self.beat_enabled:
            rows.append(("Beat", "watchdog + auto-committer"))
        if self.flower_enabled:
            user = (self.flower_auth or "").split(":", 1)[0]
            rows.append(("Flower", f"{self.flower_url}  (user {user})"))
        if self.log_dir:
            rows.append(("Logs", str(self.log_dir)))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)
