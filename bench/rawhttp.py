"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for the load generator and the
ideal driver: as little client CPU per request as Python allows, so that the engine (on the
same two cores) gets what it can use.

One :class:`Connection` is one TCP connection used by one coroutine at a time. It speaks just
what the engine's REST API needs: JSON bodies, ``Content-Length`` or chunked responses, and
reconnecting when the server closes a kept-alive connection (Tomcat does after 100 requests).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Connection", "Endpoint", "HttpError"]


class HttpError(Exception):
    def __init__(self, status: int, body: bytes, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body


class Endpoint:
    """Where the REST API is and how to log in: ``http://host:port/engine-rest``."""

    def __init__(self, rest_url: str, user: str | None, password: str | None) -> None:
        parts = urlsplit(rest_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"only plain http URLs are supported: {rest_url}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base = parts.path.rstrip("/")
        self.auth = b""
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self.auth = f"Authorization: Basic {token}\r\n".encode()


class Connection:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._host = f"Host: {endpoint.host}:{endpoint.port}\r\n".encode()

    async def _open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self.endpoint.host, self.endpoint.port
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(
        self, method: str, path: str, body: Any = None, *, expect: tuple[int, ...] = (200, 204)
    ) -> tuple[int, Any]:
        """Send one request; return (status, parsed JSON or None). Raises :class:`HttpError`
        for a status outside ``expect``."""
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"{method} {self.endpoint.base}{path} HTTP/1.1\r\n".encode()
            + self._host
            + self.endpoint.auth
            + b"Accept: application/json\r\n"
            + (b"Content-Type: application/json\r\n" if body is not None else b"")
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        )
        for attempt in range(2):
            fresh = self._writer is None
            if fresh:
                await self._open()
            assert self._reader is not None
            assert self._writer is not None
            try:
                self._writer.write(head + payload)
                status, raw, close = await self._read_response(self._reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if fresh or attempt:
                    raise
                continue  # a kept-alive connection the server had closed: once more, fresh
            if close:
                self.close()
            if status not in expect:
                raise HttpError(status, raw, f"{method} {path}")
            return status, (json.loads(raw) if raw else None)
        raise AssertionError("unreachable")

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        header = await reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        chunked = False
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and "close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            return status, b"".join(parts), close
        if length:
            return status, await reader.readexactly(length), close
        return status, b"", close
