"""TCP ports for the local stack: picking free ports (one, or a block of consecutive ones for
the hosts), checking whether a port is free or a server answers on it, and turning a
``HOST:PORT`` bind address into where a client should connect.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

from app.stack.errors import StackError

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LISTEN_FLOOR = 20000  # listening ports are picked from here up to the kernel's ephemeral range


def ephemeral_start() -> int:
    """The first port the kernel hands out to outgoing connections (32768 when it cannot be read)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, picked below the kernel's ephemeral range when there is
    room: a port in that range may be given to any outgoing connection (a Redis client's, say) between
    this check and the server's bind, which then fails (seen: a worker's facade, in the test suite).
    Otherwise the kernel's choice (bind to port 0)."""
    start = ephemeral_start()
    if start - LISTEN_FLOOR >= 1000:
        for _ in range(100):
            port = random.randrange(LISTEN_FLOOR, start)
            if port_is_free(port, host):
                return port
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
