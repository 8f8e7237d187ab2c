"""Real hosts on one machine: one Linux network namespace per worker host, joined by veth pairs.

Layout of one :class:`Network` (``run`` is a short id unique to this run, ``n`` a free /24)::

    root namespace                                   namespace floe-<run>-<id>
    bridge fb<run>  10.77.<n>.1/24                   fp<run>-<id>  10.77.<n>.<id+1>/24, lo up
       └── veth fv<run>-<id>  <───── veth pair ─────>    (a worker host's only way out)

Every host's root-side veth is a port of one bridge that holds the root-side address, so Redis and
the coordinator listen on ``10.77.<n>.1`` once and every host reaches them over its own link.
:meth:`Network.cut` sets the root end of a host's veth down — the host sees NO-CARRIER, as with a
pulled cable: packets are dropped, TCP connections hang, nothing is reset; :meth:`Network.restore`
brings it up again.

Clean-up always happens: :meth:`Network.close` kills every process left inside a namespace, then
deletes the namespaces, veths and the bridge; it runs from ``with``, from ``atexit`` and — for a run
that was itself SIGKILLed — from the next run, which removes the devices of every run whose owner
process is gone (recorded in ``/run/floe-chaos/<run>``).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.stack.redis_server import pid_alive

STATE_DIR = Path("/run/floe-chaos")
SUBNET_PREFIX = "10.77"
NS_PREFIX = "floe-"


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, no iproute2, no CAP_NET_ADMIN...)."""


def _ip(*args: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None when they can (tries one for real)."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.geteuid()})"
    probe = f"{NS_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    try:
        created = _ip("netns", "add", probe, check=False)
        if created.returncode != 0:
            return f"`ip netns add` failed: {created.stderr.strip()}"
        veth = f"fq{uuid.uuid4().hex[:6]}"
        link = _ip("link", "add", veth, "type", "veth", "peer", "name", veth + "p", check=False)
        if link.returncode != 0:
            return f"`ip link add … type veth` failed: {link.stderr.strip()}"
        _ip("link", "del", veth, check=False)
        return None
    finally:
        _ip("netns", "del", probe, check=False)


# --------------------------------------------------------------------------------------------
# bookkeeping of runs, so a SIGKILLed run's devices are removed by the next one
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_namespace_processes(ns: str) -> None:
    """SIGKILL whatever still runs inside ``ns`` (deleting a namespace does not end its processes)."""
    for _ in range(50):
        pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split() if p.isdigit()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _remove_run_devices(run: str) -> None:
    for ns in _namespaces():
        if ns.startswith(f"{NS_PREFIX}{run}-"):
            _kill_namespace_processes(ns)
            _ip("netns", "del", ns, check=False)
    links = _ip("-o", "link", "show", check=False).stdout
    for name in re.findall(r"^\d+: ([^:@\s]+)", links, flags=re.M):
        if name in (f"fb{run}",) or name.startswith((f"fv{run}-", f"fp{run}-")):
            _ip("link", "del", name, check=False)


def cleanup_stale() -> list[str]:
    """Remove the namespaces and links of earlier runs whose owning process is gone."""
    removed: list[str] = []
    if not STATE_DIR.is_dir():
        return removed
    for entry in STATE_DIR.iterdir():
        if entry.name.startswith("."):
            continue
        try:
            owner = int(json.loads(entry.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            owner = 0
        if owner and pid_alive(owner):
            continue
        _remove_run_devices(entry.name)
        with contextlib.suppress(OSError):
            entry.unlink()
        removed.append(entry.name)
    return removed


def _used_subnets() -> set[int]:
    out = _ip("-o", "-4", "addr", "show", check=False).stdout
    return {int(m) for m in re.findall(rf"inet {re.escape(SUBNET_PREFIX)}\.(\d+)\.\d+/", out)}


# --------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------


@dataclass
class Host:
    """One worker host: its namespace, its link and its address."""

    host_id: int
    namespace: str
    veth_root: str
    veth_host: str
    address: str
    cut: bool = False

    def exec_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass
class Network:
    """A bridge in the root namespace and one namespace per host; use as a context manager."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    subnet: int = 0
    hosts: dict[int, Host] = field(default_factory=dict)
    closed: bool = False

    @property
    def bridge(self) -> str:
        return f"fb{self.run}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the hosts' network (Redis and the coordinator listen here)."""
        return f"{SUBNET_PREFIX}.{self.subnet}.1"

    @property
    def cidr(self) -> str:
        return f"{SUBNET_PREFIX}.{self.subnet}.0/24"

    def open(self) -> Network:
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        cleanup_stale()
        with _allocation_lock():
            used = _used_subnets()
            free = [n for n in range(1, 255) if n not in used]
            if not free:
                raise NetnsUnavailable(f"no free /24 left in {SUBNET_PREFIX}.0.0/16")
            self.subnet = free[int(self.run, 16) % len(free)]
            (STATE_DIR / self.run).write_text(json.dumps({"pid": os.getpid(), "subnet": self.subnet}))
            atexit.register(self.close)
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, host_id: int) -> Host:
        if not 1 <= host_id <= 250:
            raise ValueError(f"host id {host_id} must be within 1..250")
        if host_id in self.hosts:
            return self.hosts[host_id]
        ns = f"{NS_PREFIX}{self.run}-{host_id}"
        host = Host(
            host_id,
            ns,
            f"fv{self.run}-{host_id}",
            f"fp{self.run}-{host_id}",
            f"{SUBNET_PREFIX}.{self.subnet}.{host_id + 1}",
        )
        self.hosts[host_id] = host
        _ip("netns", "add", ns)
        _ip("link", "add", host.veth_root, "type", "veth", "peer", "name", host.veth_host)
        _ip("link", "set", host.veth_host, "netns", ns)
        _ip("link", "set", host.veth_root, "master", self.bridge)
        _ip("link", "set", host.veth_root, "up")
        _ip("addr", "add", f"{host.address}/24", "dev", host.veth_host, ns=ns)
        _ip("link", "set", host.veth_host, "up", ns=ns)
        _ip("link", "set", "lo", "up", ns=ns)
        return host

    def cut(self, host_id: int) -> None:
        """Pull the cable: the root end of the host's veth goes down.

        The host keeps its address and routes but sees NO-CARRIER, as a machine whose cable was
        pulled does: its packets vanish, established TCP connections hang (no reset reaches either
        side) and new connections time out instead of failing at once.
        """
        host = self.hosts[host_id]
        _ip("link", "set", host.veth_root, "down")
        host.cut = True

    def restore(self, host_id: int) -> None:
        host = self.hosts[host_id]
        _ip("link", "set", host.veth_root, "up")
        host.cut = False

    def link_up(self, host_id: int) -> bool:
        host = self.hosts[host_id]
        out = _ip("-o", "link", "show", host.veth_root, check=False).stdout
        return ",UP" in out or "<UP" in out

    def close(self) -> None:
        """Kill what runs inside the namespaces, delete namespaces, veths and the bridge. Idempotent."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        _remove_run_devices(self.run)
        with contextlib.suppress(OSError):
            (STATE_DIR / self.run).unlink()

    def leftovers(self) -> list[str]:
        """Namespaces or links of this run that still exist (empty after :meth:`close`)."""
        found = [ns for ns in _namespaces() if ns.startswith(f"{NS_PREFIX}{self.run}-")]
        links = _ip("-o", "link", "show", check=False).stdout
        found += [
            name
            for name in re.findall(r"^\d+: ([^:@\s]+)", links, flags=re.M)
            if name == self.bridge or name.startswith((f"fv{self.run}-", f"fp{self.run}-"))
        ]
        return found

    def __enter__(self) -> Network:
        return self.open()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def contains(self, address: str) -> bool:
        return ipaddress.ip_address(address) in ipaddress.ip_network(self.cidr)
