"""The worker's own HTTP server: ``/metrics``, ``/healthz``, ``/readyz``, and extra routes.

One address and port (``CAMUNDA_HTTP_ADDRESS``, loopback by default; ``CAMUNDA_HTTP_PORT``,
off unless set), served by aiohttp on an event loop in a thread of its own, so that a slow
scrape, a probe or a flood of requests never runs on the worker's event loop:

- ``GET /metrics``: every metric of the worker, the reconciler's included, in one registry
  (Prometheus text format);
- ``GET /healthz``: liveness, 200 or 503 with ``{"ok": ..., "problems": [...]}``
  (:meth:`~camunda_relay.worker.health.Health.live`: the loops are alive; an engine outage
  is not a failure);
- ``GET /readyz``: readiness, the same shape (the engine answered recently, the journal
  takes writes).

Extra routes are a mapping of path prefixes to routes: a :class:`Route` (asynchronous; it may
refuse a request from its line and headers before the body is read, then answers on the
server's loop) or a plain :data:`RouteHandler` function, called on a thread with (method,
path, headers with lower-cased names, body) and returning (status, content type, body).
``path`` is the request target as sent, query string included. The built-in paths win;
otherwise the longest matching prefix does; nothing matches: 404. A route that raises
answers 500 (logged, without the request).

What the network can ask of it is bounded (:mod:`camunda_relay.serve_limits`):
:data:`MAX_CONNECTIONS` open connections (the oldest one without a complete request makes
room for a new one), :data:`MAX_HANDLERS` routes answering at once (503 beyond), a request
complete and answered within :data:`REQUEST_DEADLINE` seconds, bodies (with a
``Content-Length`` or chunked) up to :data:`MAX_BODY` bytes (413 beyond). Refusals are logged
at a bounded rate (:mod:`camunda_relay.throttled_log`); a client that goes away is one DEBUG
line. Log lines name the method, the path without its query and the status; never a header
or a body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from camunda_relay.errors import ConfigurationError
from camunda_relay.serve_limits import (
    Connections,
    Malformed,
    TooLarge,
    descriptor_room,
    read_body,
    wire_logger,
)
from camunda_relay.throttled_log import ThrottledLog

if TYPE_CHECKING:
    from camunda_relay.worker import Worker
    from camunda_relay.worker.health import Verdict

__all__ = [
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "MAX_HANDLERS",
    "REQUEST_DEADLINE",
    "Answer",
    "HttpServer",
    "Route",
    "RouteHandler",
    "Routes",
    "probe_host",
    "serve_worker",
]

log = logging.getLogger(__name__)

Answer = tuple[int, str, bytes]
"""(status, content type, body)."""
RouteHandler = Callable[[str, str, Mapping[str, str], bytes], Answer]
"""(method, path, headers with lower-cased names, body) -> (status, content type, body)."""


class Route(ABC):
    """An asynchronous route, answered on the server's event loop."""

    def admit(self, method: str, path: str, headers: Mapping[str, str]) -> Answer | None:
        """An answer that refuses the request before its body is read (a wrong method, a
        missing secret), or None to read the body and :meth:`answer`."""
        return None

    @abstractmethod
    async def answer(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Answer:
        """The answer to a complete request."""

    async def close(self) -> None:
        """Give back what the route holds; later requests may be refused (called on the
        server's loop, perhaps more than once)."""
        return None


Routes = Mapping[str, "RouteHandler | Route"]

MAX_BODY = 1024 * 1024
"""The largest request body the server reads (bytes)."""
MAX_CONNECTIONS = 2048
"""Connections open at once (the oldest one without a complete request makes room); at most
half the process's file descriptor limit. An idle connection costs about 6 KiB."""
MAX_HANDLERS = 16
"""Routes answering at once; a request beyond is answered 503."""
REQUEST_DEADLINE = 10.0
"""Seconds for a whole request, from the connection (or the previous answer) to the answer."""
KEEPALIVE = 5.0
"""Seconds an idle keep-alive connection stays open."""
SOCKET_TIMEOUT = REQUEST_DEADLINE  # the name before aiohttp
_TEXT = "text/plain; charset=utf-8"
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

    ``live`` and ``ready`` are called from the server's thread. :meth:`start` binds (port 0:
    any free port, then see :attr:`port`) and raises :class:`ConfigurationError` with one
    line when it cannot; :meth:`close` stops serving and is safe to repeat. The limits are
    the module's constants unless given.
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
        max_connections: int = MAX_CONNECTIONS,
        max_handlers: int = MAX_HANDLERS,
        request_deadline: float = REQUEST_DEADLINE,
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
        self._max_connections = min(max_connections, descriptor_room(MAX_CONNECTIONS))
        self._max_handlers = max_handlers
        self._deadline = request_deadline
        self._handlers = 0
        self._refusals = ThrottledLog(log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._web: Connections | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def port(self) -> int:
        """The port served on (the one bound when 0 was asked for)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def open_connections(self) -> int:
        """Connections open now (for tests and load checks)."""
        return self._web.open_connections if self._web is not None else 0

    def start(self) -> None:
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_loop_error)
        opened: list[BaseException | None] = []
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
                opened.append(None)
            except BaseException as error:  # noqa: BLE001 - handed to start()
                opened.append(error)
            ready.set()
            if opened[0] is None:
                loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="relay-http", daemon=True)
        self._thread.start()
        ready.wait()
        if opened[0] is not None:
            self._thread.join()
            self._thread = self._loop = None
            raise _bind_error(opened[0], f"{self.address}:{self._port}")
        log.info("serving /metrics, /healthz and /readyz on %s:%d", self.address, self.port)

    async def _open(self) -> None:
        self._pool = ThreadPoolExecutor(self._max_handlers, thread_name_prefix="relay-http-route")
        self._web = Connections(
            self._handle,
            max_connections=self._max_connections,
            deadline=self._deadline,
            refusals=self._refusals,
            keepalive_timeout=min(KEEPALIVE, self._deadline),
            logger=wire_logger(),
            access_log=None,
            lingering_time=min(2.0, self._deadline / 2),
            max_line_size=8190,
            max_field_size=8190,
            max_headers=64,
        )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._web, self.address or None, self._port, reuse_address=True, backlog=128
        )
        self._web.start_sweeping()

    def close(self) -> None:
        loop, thread, self._thread = self._loop, self._thread, None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        except Exception as error:  # noqa: BLE001 - closing: say it, go on
            log.debug("the HTTP server did not close cleanly (%s)", type(error).__name__)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        self._loop = None

    def close_routes(self) -> None:
        """Let the routes give back what they hold (:meth:`Route.close`) while the probes and
        metrics go on being served: the worker is stopping."""
        if self._loop is not None:
            closing = asyncio.run_coroutine_threadsafe(self._close_routes(), self._loop)
            closing.result(timeout=10)

    async def _close_routes(self) -> None:
        for route in self._routes.values():
            if isinstance(route, Route):
                await route.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._web is not None:
            self._web.stop_sweeping()
            await self._web.shutdown(1.0)
        await self._close_routes()
        if self._server is not None:
            await self._server.wait_closed()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- answering -------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        connections, handler = self._web, request.protocol
        assert connections is not None
        bare = request.raw_path.split("?", 1)[0]
        connections.answering(handler)
        try:
            status, content_type, payload, close = await self._answer(request)
        except ConnectionError:
            log.debug("%s %s: the client went away before its body was read", request.method, bare)
            status, content_type, payload, close = 400, _TEXT, b"incomplete body\n", True
        else:
            log.debug("%s %s -> %d", request.method, bare, status)
        finally:
            connections.answered(handler)
        response = web.Response(status=status, body=payload, headers={"Content-Type": content_type})
        if close:
            response.force_close()
        return response

    async def _answer(self, request: web.BaseRequest) -> tuple[int, str, bytes, bool]:
        method, path = request.method, request.raw_path
        bare = path.split("?", 1)[0]
        builtin = {"/metrics": self._metrics, "/healthz": self._healthz, "/readyz": self._readyz}
        if bare in builtin:
            if method not in ("GET", "HEAD"):
                return 405, _TEXT, b"method not allowed\n", False
            return (*builtin[bare](), False)
        matches = [prefix for prefix in self._routes if bare.startswith(prefix)]
        if not matches:
            return 404, _TEXT, b"not found\n", False
        if self._handlers >= self._max_handlers:
            self._refusals.note(
                "busy",
                f"HTTP server: {self._max_handlers} requests being answered (the limit): "
                "a request was answered 503",
            )
            return 503, _TEXT, b"busy, try again later\n", False
        self._handlers += 1
        try:
            return await self._route(self._routes[max(matches, key=len)], request, bare)
        finally:
            self._handlers -= 1

    async def _route(
        self, route: RouteHandler | Route, request: web.BaseRequest, bare: str
    ) -> tuple[int, str, bytes, bool]:
        method, path = request.method, request.raw_path
        headers = {name.lower(): value for name, value in request.headers.items()}
        if isinstance(route, Route):
            refused = route.admit(method, path, headers)
            if refused is not None:  # aiohttp discards the unread body (2 s at most)
                return (*refused, False)
        try:
            body = await read_body(request, MAX_BODY)
        except TooLarge:
            return 413, _TEXT, b"request body too large\n", True
        except Malformed:
            return 400, _TEXT, b"malformed body\n", True
        try:
            if isinstance(route, Route):
                return (*await route.answer(method, path, headers, body), False)
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(self._pool, route, method, path, headers, body)
            return (*answer, False)
        except Exception:
            log.exception("the handler of %s %s failed", method, bare)
            return 500, _TEXT, b"internal error\n", False

    def _metrics(self) -> Answer:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)

    def _healthz(self) -> Answer:
        return _verdict(self._live())

    def _readyz(self) -> Answer:
        return _verdict(self._ready())


def _verdict(verdict: Verdict) -> Answer:
    body = json.dumps({"ok": verdict.ok, "problems": list(verdict.problems)})
    return (200 if verdict.ok else 503), _JSON, body.encode() + b"\n"


def _bind_error(error: BaseException, where: str) -> BaseException:
    if isinstance(error, OSError):
        return ConfigurationError(
            f"cannot serve HTTP on {where} (CAMUNDA_HTTP_ADDRESS, CAMUNDA_HTTP_PORT): "
            f"{error.strerror or error}"
        )
    return error


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """The server loop's unhandled errors: one line each, in the configured log format."""
    error = context.get("exception")
    kind = type(error).__name__ if error is not None else "no exception"
    log.debug("HTTP server: %s (%s)", context.get("message", "an error"), kind)


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
