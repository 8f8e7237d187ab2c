"""Man-in-the-middle faults between Floe and its catalog: an HTTP proxy for the REST catalog and a TCP
relay for PostgreSQL, both listening on the hosts' gateway address (worker hosts in their namespaces
reach them as they would reach the real server).

:class:`CatalogProxy` forwards every request to the REST catalog, and on demand, for the first request
matching a method and a path suffix (the commit is ``POST …/tables/<table>``):

- :meth:`~CatalogProxy.go_down_on`: drops that request unanswered and stops listening (connections are
  refused) until :meth:`~CatalogProxy.up` — the catalog becomes unreachable in the middle of the commit;
- :meth:`~CatalogProxy.lose_answer_of`: forwards it, reads the catalog's answer and drops it — the
  commit lands and the caller never hears of it;
- :meth:`~CatalogProxy.hold`: keeps it, unsent, until :meth:`~CatalogProxy.release` — the request left
  the committer and has not reached the catalog; released later, it arrives late.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field

HOP_BY_HOP = ("transfer-encoding", "connection", "content-length", "keep-alive")


@dataclass
class Exchange:
    """One request the proxy saw: what it did with it and what the catalog answered (None: not sent)."""

    method: str
    path: str
    disposition: str  # forwarded | dropped | answer-lost | held
    status: int | None = None
    body: bytes = b""


@dataclass
class _Rule:
    action: str  # down | lose | hold
    method: str
    suffix: str
    fired: threading.Event = field(default_factory=threading.Event)


class CatalogProxy:
    def __init__(self, upstream: str, host: str, port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.exchanges: list[Exchange] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._forward_held = False
        self.held_done = threading.Event()  # a released request was forwarded (or dropped)
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.up()

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- listening ---------------------------------------------------------------------------

    def up(self) -> None:
        """Listen (again, on the same port)."""
        with self._lock:
            if self._server is not None:
                return
            server = http.server.ThreadingHTTPServer((self.host, self.port), self._handler())
            server.daemon_threads = True
            self.port = int(server.server_address[1])
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, name="catalog-proxy", daemon=True)
            self._thread.start()

    def down(self) -> None:
        """Stop listening: new connections are refused (requests in flight finish)."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def close(self) -> None:
        self.release(forward=False)
        self.down()

    # -- faults ------------------------------------------------------------------------------

    def go_down_on(self, method: str, suffix: str) -> threading.Event:
        return self._add("down", method, suffix)

    def lose_answer_of(self, method: str, suffix: str) -> threading.Event:
        return self._add("lose", method, suffix)

    def hold(self, method: str, suffix: str) -> threading.Event:
        return self._add("hold", method, suffix)

    def release(self, forward: bool) -> None:
        """Let a held request go: on to the catalog (``forward``), or nowhere."""
        self._forward_held = forward
        self._release.set()

    def _add(self, action: str, method: str, suffix: str) -> threading.Event:
        rule = _Rule(action, method, suffix)
        with self._lock:
            self._rules.append(rule)
        return rule.fired

    def _match(self, method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.method == method and path.split("?")[0].endswith(rule.suffix):
                    self._rules.remove(rule)
                    return rule
        return None

    def matching(self, method: str, suffix: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == method and e.path.split("?")[0].endswith(suffix)]

    # -- forwarding --------------------------------------------------------------------------

    def _send(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> Exchange:
        request = urllib.request.Request(self.upstream + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return Exchange(method, path, "forwarded", response.status, response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return Exchange(method, path, "forwarded", exc.code, exc.read())

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", *HOP_BY_HOP)}
                rule = proxy._match(self.command, self.path)
                if rule is not None and rule.action == "down":
                    proxy.exchanges.append(Exchange(self.command, self.path, "dropped"))
                    rule.fired.set()
                    self.close_connection = True
                    proxy.down()  # before the caller learns anything: its retries are refused
                    return  # no answer: the caller sees the connection closed
                if rule is not None and rule.action == "hold":
                    rule.fired.set()
                    proxy._release.wait()
                    if not proxy._forward_held:
                        proxy.exchanges.append(Exchange(self.command, self.path, "dropped"))
                        proxy.held_done.set()
                        self.close_connection = True
                        return
                    exchange = proxy._send(self.command, self.path, headers, body)
                    exchange.disposition = "held"
                    proxy.exchanges.append(exchange)
                    proxy.held_done.set()
                    with contextlib.suppress(OSError):  # its sender is long gone
                        self._reply(exchange)
                    return
                try:
                    exchange = proxy._send(self.command, self.path, headers, body)
                except OSError:  # the catalog itself is down: so is the proxy, to its caller
                    proxy.exchanges.append(Exchange(self.command, self.path, "upstream-unreachable"))
                    self.close_connection = True
                    return
                if rule is not None and rule.action == "lose":
                    exchange.disposition = "answer-lost"
                    proxy.exchanges.append(exchange)
                    rule.fired.set()
                    self.close_connection = True
                    return  # the catalog answered; the caller never hears it
                proxy.exchanges.append(exchange)
                self._reply(exchange)

            def _reply(self, exchange: Exchange) -> None:
                self.send_response(exchange.status or 502)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(exchange.body)))
                self.end_headers()
                self.wfile.write(exchange.body)

            do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = _forward

            def log_message(self, *_args: object) -> None:
                pass

        return Handler


class TcpRelay:
    """Relays TCP connections from ``host``:<port> to ``upstream`` (PostgreSQL on 127.0.0.1:5432 for the
    worker hosts, which cannot reach the root namespace's loopback). A server restart behind it closes
    the relayed connections as it would close direct ones."""

    def __init__(self, host: str, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server((host, 0))
        self.host, self.port = host, int(self._listener.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="tcp-relay", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.close()
            self._conns.clear()
