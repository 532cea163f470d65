"""The HTTP stack under the engine client: one small interface, two implementations.

:class:`HttpStack` sends one request and returns the whole :class:`Answer` (status, headers,
body bytes), or raises one of its own exceptions, which :mod:`camunda_relay.errors` maps to
the package's errors (:func:`~camunda_relay.errors.from_transport_error`)::

    HttpError           the request failed on the wire; ``kind`` names the library's error
    ├── ConnectFailed   no connection was made: nothing was sent (another node may take it)
    │   └── TlsFailed   the TLS handshake failed (``ssl_error``: the ``ssl`` module's error)
    ├── TimedOut        connecting, or waiting for the answer, took too long
    └── ConnectionLost  the connection broke (or the answer was unreadable) after connecting

:class:`~camunda_relay.http.aiohttp_stack.AiohttpStack` (aiohttp) talks to real engines;
:class:`~camunda_relay.http.httpx_stack.HttpxStack` runs an httpx transport, so the
in-process fake engine (``httpx.MockTransport``) serves the error-path tests. Neither
retries a request that was sent (aiohttp resends an idempotent one, GET, PUT or DELETE,
once when a kept-alive connection turns out closed, as RFC 9112 allows; never a POST).
"""

from __future__ import annotations

import json as _json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Answer",
    "ConnectFailed",
    "ConnectionLost",
    "Files",
    "HttpError",
    "HttpStack",
    "Params",
    "TimedOut",
    "Timeouts",
    "TlsFailed",
]

Params = Mapping[str, str | int]
Files = Mapping[str, tuple[str, bytes, str]]  # field -> (file name, content, content type)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait: ``connect`` to connect (and for a free pooled connection), ``read``
    for each part of the answer (a long poll: its wait plus a margin)."""

    connect: float
    read: float

    @classmethod
    def each(cls, seconds: float) -> Timeouts:
        return cls(connect=seconds, read=seconds)


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer, read completely (the connection is back in the pool)."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is none."""
        return _json.loads(self.body)


class HttpError(Exception):
    """A request failed on the wire. ``kind``: the HTTP library's name for the failure
    (error messages show it)."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class ConnectFailed(HttpError):
    """No connection was made (refused, unreachable, name not resolved): nothing was sent."""


class TimedOut(HttpError):
    """Connecting or waiting for (part of) the answer took longer than its timeout."""


class TlsFailed(ConnectFailed):
    """The TLS handshake failed: a certificate not trusted, or no TLS on that port."""

    def __init__(self, message: str, *, kind: str, ssl_error: ssl.SSLError) -> None:
        super().__init__(message, kind=kind)
        self.ssl_error = ssl_error


class ConnectionLost(HttpError):
    """The connection broke after it was made, or the answer could not be read: the request
    may have reached the engine."""


class HttpStack(Protocol):
    """Sends requests; one instance per engine client, closed with :meth:`aclose`."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        timeouts: Timeouts,
        json: object = None,
        data: Mapping[str, str] | None = None,
        files: Files | None = None,
        params: Params | None = None,
        server_name: str | None = None,
    ) -> Answer:
        """Send one request (``json``, a form in ``data``, or a multipart form of ``data``
        and ``files``); ``server_name``: the TLS server name when the URL names an address.
        Raises :class:`HttpError`; ``RuntimeError`` once closed."""
        ...

    async def aclose(self) -> None:
        """Close every connection; idempotent."""
        ...


def find_ssl_error(error: BaseException) -> ssl.SSLError | None:
    """The ``ssl`` error behind a failure, if it was one (following causes and contexts)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        # aiohttp's TLS errors are ssl errors themselves, but only the one they wrap has the
        # verify message and the reason: that one first.
        nested = getattr(cause, "certificate_error", None) or getattr(cause, "os_error", None)
        if isinstance(nested, ssl.SSLError):
            return nested
        if isinstance(cause, ssl.SSLError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None
