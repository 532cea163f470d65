"""The worker HTTP server's limits on connections (used by :mod:`camunda_relay.serve`).

:class:`Connections` is the aiohttp low-level server with three limits added:

- **at most** ``max_connections`` **open connections**. A new connection always gets in: when
  the limit is reached, the connection that has waited longest without a complete request
  (none of its requests is being answered) is closed to make room. So slow or idle
  connections cannot lock a probe out, and the open sockets stay bounded;
- **a deadline for the whole request**: a request must be complete and answered within
  ``deadline`` seconds of the connection opening or of the previous answer on it (not per
  read: a client trickling one byte a second is closed as well). A sweep every fraction of
  the deadline closes the late ones;
- aiohttp's own keep-alive timeout closes idle keep-alive connections sooner.

aiohttp's protocol errors (a request that is not HTTP, a line too long, a client gone) go to
:func:`wire_logger`: one DEBUG line each, never a traceback, in the configured log format.
Connections closed by a limit are counted in a :class:`~camunda_relay.throttled_log.
ThrottledLog` line, not logged one by one.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from camunda_relay.throttled_log import ThrottledLog

__all__ = ["Connections", "Malformed", "TooLarge", "descriptor_room", "read_body", "wire_logger"]

log = logging.getLogger("camunda_relay.serve")


class _WireLogger(logging.Logger):
    """aiohttp's server logger: what it would log as an exception (a bad request, a client
    gone) is one DEBUG line naming the error's type, without a traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else None
        kind = type(error).__name__ if error is not None else "an error"
        self.debug("HTTP connection: %s (%s)", str(msg) % args if args else msg, kind)


def wire_logger() -> logging.Logger:
    """A logger under ``camunda_relay.serve`` for aiohttp's server (it propagates to the
    handlers the application configured for ``camunda_relay``)."""
    wire = _WireLogger("camunda_relay.serve.wire")
    wire.parent = log
    return wire


class Connections(web.Server):
    """aiohttp's low-level server, with a bound on connections and a request deadline."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        max_connections: int,
        deadline: float,
        refusals: ThrottledLog,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._max = max_connections
        self._deadline = deadline
        self._refusals = refusals
        self._since: dict[RequestHandler, float] = {}  # oldest first: connected or answered
        self._busy: dict[RequestHandler, int] = {}  # requests being answered per connection
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def open_connections(self) -> int:
        return len(self._since)

    def start_sweeping(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if len(self._since) >= self._max:
            self._shed()
        super().connection_made(handler, transport)
        self._since[handler] = asyncio.get_running_loop().time()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._since.pop(handler, None)
        self._busy.pop(handler, None)
        super().connection_lost(handler, exc)

    def answering(self, handler: RequestHandler) -> None:
        """A request of ``handler``'s connection is complete and being answered."""
        self._busy[handler] = self._busy.get(handler, 0) + 1

    def answered(self, handler: RequestHandler) -> None:
        """The answer is written: the next request's deadline starts now."""
        left = self._busy.get(handler, 0) - 1
        if left > 0:
            self._busy[handler] = left
        else:
            self._busy.pop(handler, None)
        if handler in self._since:
            del self._since[handler]
            self._since[handler] = asyncio.get_running_loop().time()

    def _shed(self) -> None:
        for handler in self._since:
            if handler not in self._busy:
                self._close(handler)
                self._refusals.note(
                    "shed",
                    f"HTTP server: {self._max} connections open (the limit): the oldest "
                    "without a complete request was closed",
                )
                return

    def _close(self, handler: RequestHandler) -> None:
        self._since.pop(handler, None)
        handler.force_close()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self._deadline / 4))
            late = loop.time() - self._deadline
            expired = []
            for handler, since in self._since.items():
                if since > late:
                    break  # ordered by time: the rest are younger
                expired.append(handler)
            for handler in expired:
                self._close(handler)
            if expired:
                self._refusals.note(
                    "deadline",
                    f"HTTP server: {len(expired)} connection(s) closed: no complete request "
                    f"answered within {self._deadline:g} s",
                )


class TooLarge(Exception):
    """The body is over the size limit."""


class Malformed(Exception):
    """The chunks of a chunked body do not parse."""


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The body, with a ``Content-Length`` or chunked, up to ``limit`` bytes
    (:class:`TooLarge` beyond, :class:`Malformed`; ``ConnectionError``: the client left)."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await request.content.readany()
        except RequestPayloadError:
            raise Malformed from None
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            raise TooLarge
        parts.append(chunk)


def descriptor_room(wanted: int) -> int:
    """``wanted`` connections, or half the process's file descriptor limit when that is less
    (the journal, the engine client and the log keep the other half)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return wanted if soft == resource.RLIM_INFINITY else min(wanted, max(16, soft // 2))
