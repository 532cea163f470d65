"""The worker's own HTTP server: ``/metrics``, ``/healthz``, ``/readyz``, and extra routes.

One address and port (``CAMUNDA_HTTP_ADDRESS``, loopback by default; ``CAMUNDA_HTTP_PORT``,
off unless set), served from a thread of its own so that a slow scrape or probe never
touches the worker's event loop:

- ``GET /metrics``: every metric of the worker, the reconciler's included, in one registry
  (Prometheus text format);
- ``GET /healthz``: liveness, 200 or 503 with ``{"ok": ..., "problems": [...]}``
  (:meth:`~camunda_relay.worker.health.Health.live`: the loops are alive; an engine outage
  is not a failure);
- ``GET /readyz``: readiness, the same shape (the engine answered recently, the journal
  takes writes).

Extra routes are a mapping of path prefixes to :data:`RouteHandler` functions, called from
a server thread with (method, path, headers with lower-cased names, body) and returning
(status, content type, body). ``path`` is the request target as sent, query string included.
The built-in paths win; otherwise the longest matching prefix does; nothing matches: 404.
A handler that raises answers 500 (logged, without the request). Bodies above
:data:`MAX_BODY` are refused (413) before any handler sees them.

Log lines name the method, the path without its query and the status; never a header or a
body.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from camunda_relay.errors import ConfigurationError

if TYPE_CHECKING:
    from camunda_relay.worker import Worker
    from camunda_relay.worker.health import Verdict

__all__ = ["MAX_BODY", "HttpServer", "RouteHandler", "Routes", "probe_host", "serve_worker"]

log = logging.getLogger(__name__)

RouteHandler = Callable[[str, str, Mapping[str, str], bytes], tuple[int, str, bytes]]
"""(method, path, headers with lower-cased names, body) -> (status, content type, body)."""
Routes = Mapping[str, RouteHandler]

MAX_BODY = 1024 * 1024
"""The largest request body the server reads (bytes)."""
SOCKET_TIMEOUT = 10.0
"""Seconds a connection may stay silent before the server drops it."""
_JSON = "application/json"
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 - names, no bind


def probe_host(address: str) -> str:
    """Where to reach a server bound to ``address`` from this host (wildcards: loopback)."""
    address = address.strip()
    if address in _WILDCARDS:
        return "::1" if ":" in address else "127.0.0.1"
    return address.strip("[]")


class HttpServer:
    """Serves ``registry`` at ``/metrics``, the two probes, and ``routes``, on a thread.

    ``live`` and ``ready`` are called from server threads. :meth:`start` binds (port 0: any
    free port, then see :attr:`port`) and raises :class:`ConfigurationError` with one line
    when it cannot; :meth:`close` stops serving and is safe to repeat.
    """

    def __init__(
        self,
        address: str,
        port: int,
        *,
        registry: CollectorRegistry,
        live: Callable[[], Verdict],
        ready: Callable[[], Verdict],
        routes: Routes | None = None,
    ) -> None:
        for prefix in routes or {}:
            if not prefix.startswith("/"):
                raise ValueError(f"a route prefix must start with '/', not {prefix!r}")
        self.address = address.strip().strip("[]")
        self._port = port
        self._registry = registry
        self._live = live
        self._ready = ready
        self._routes = dict(routes or {})
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port served on (the one bound when 0 was asked for)."""
        return self._server.server_address[1] if self._server is not None else self._port

    def start(self) -> None:
        if self._server is not None:
            return
        handler = _handler_class(self)
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        server_class = type("_Server", (ThreadingHTTPServer,), {"address_family": family})
        try:
            server = server_class((self.address, self._port), handler)
        except OSError as error:
            where = f"{self.address}:{self._port}"
            raise ConfigurationError(
                f"cannot serve HTTP on {where} (CAMUNDA_HTTP_ADDRESS, CAMUNDA_HTTP_PORT): "
                f"{error.strerror or error}"
            ) from None
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="relay-http", daemon=True)
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz on %s:%d", self.address, self.port)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- answering -------------------------------------------------------------------------

    def answer(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        """The answer to one request (the server thread calls it)."""
        bare = path.split("?", 1)[0]
        builtin = {"/metrics": self._metrics, "/healthz": self._healthz, "/readyz": self._readyz}
        if bare in builtin:
            if method not in ("GET", "HEAD"):
                return 405, "text/plain; charset=utf-8", b"method not allowed\n"
            return builtin[bare]()
        matches = [prefix for prefix in self._routes if bare.startswith(prefix)]
        if not matches:
            return 404, "text/plain; charset=utf-8", b"not found\n"
        route = self._routes[max(matches, key=len)]
        try:
            return route(method, path, headers, body)
        except Exception:
            log.exception("the handler of %s %s failed", method, bare)
            return 500, "text/plain; charset=utf-8", b"internal error\n"

    def _metrics(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)

    def _healthz(self) -> tuple[int, str, bytes]:
        return _verdict(self._live())

    def _readyz(self) -> tuple[int, str, bytes]:
        return _verdict(self._ready())


def _verdict(verdict: Verdict) -> tuple[int, str, bytes]:
    body = json.dumps({"ok": verdict.ok, "problems": list(verdict.problems)})
    return (200 if verdict.ok else 503), _JSON, body.encode() + b"\n"


def _handler_class(server: HttpServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT
        server_version = "camunda-relay"
        sys_version = ""

        def _serve(self) -> None:
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                length = int(headers.get("content-length", "0") or 0)
            except ValueError:
                self._send(400, "text/plain; charset=utf-8", b"bad content-length\n")
                return
            if length < 0 or length > MAX_BODY:
                self._send(413, "text/plain; charset=utf-8", b"request body too large\n")
                return
            body = self.rfile.read(length) if length else b""
            status, content_type, payload = server.answer(self.command, self.path, headers, body)
            self._send(status, content_type, payload)

        def _send(self, status: int, content_type: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

        def log_message(self, format: str, *args: object) -> None:
            return  # no access log: log_request below names only method, path and status

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            log.debug("%s %s -> %s", self.command, self.path.split("?", 1)[0], code)

    return _Handler


def serve_worker(
    worker: Worker, address: str, port: int, *, routes: Routes | None = None
) -> HttpServer:
    """Start serving ``worker``'s metrics and probes (and ``routes``); the caller closes it."""
    from camunda_relay.metrics import register

    registry = CollectorRegistry()
    register(worker, registry)
    server = HttpServer(
        address,
        port,
        registry=registry,
        live=worker.health.live,
        ready=worker.health.ready,
        routes=routes,
    )
    server.start()
    return server
