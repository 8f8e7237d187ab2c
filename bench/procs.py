"""Driver side of the warm contender processes (:mod:`bench.contender`) and small process helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


class ContenderError(RuntimeError):
    pass


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without anything that would point Floe or pyiceberg elsewhere."""
    drop = ("ICEBERG_", "PYICEBERG_", "WORKER_", "FLOE_", "REDIS_URL", "COORDINATOR_ADDRESS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


class Contender:
    """``python -m bench.contender KIND``: started and imported before any clock runs."""

    def __init__(self, kind: str, log_dir: Path, name: str | None = None) -> None:
        self.kind = kind
        self.name = name or kind
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"contender-{self.name}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.contender", kind],
            cwd=ROOT,
            env=clean_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        ready = self._read()
        if ready.get("ready") != kind:
            raise ContenderError(f"contender {self.name} did not start: {ready}")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise ContenderError(f"contender {self.name} exited with {self.proc.returncode}:\n{tail}")
        return dict(json.loads(line))

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        reply = self._read()
        if not reply.get("ok"):
            raise ContenderError(f"{self.name} failed: {reply.get('error')}\n{reply.get('trace', '')}")
        return reply

    def run(self, cmd: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        self.send(cmd)
        reply = self.receive()
        return time.perf_counter() - started, reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"op": "exit"})
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def run_together(pairs: list[tuple[Contender, dict[str, Any]]]) -> tuple[float, list[dict[str, Any]]]:
    """Start every command at once; the time until the last one answered."""
    started = time.perf_counter()
    for contender, cmd in pairs:
        contender.send(cmd)
    replies = [contender.receive() for contender, _ in pairs]
    return time.perf_counter() - started, replies


def run_json(argv: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run a helper process that prints one JSON object as its last line of output."""
    done = subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise ContenderError(f"{' '.join(argv[:4])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
