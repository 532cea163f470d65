"""The httpx implementation of :class:`~camunda_relay.http.HttpStack`: what an engine client
given an httpx transport runs on (``httpx.MockTransport``, the in-process fake engine of
:mod:`camunda_relay.testing.fake_engine`)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import httpx

from camunda_relay.http import (
    Answer,
    ConnectFailed,
    ConnectionLost,
    Files,
    HttpError,
    Params,
    TimedOut,
    Timeouts,
    TlsFailed,
    find_ssl_error,
)

__all__ = ["HttpxStack", "answer"]


class HttpxStack:
    """One ``httpx.AsyncClient`` on ``transport`` (None: httpx's own, the network)."""

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        headers: Mapping[str, str] | None = None,
        connections: int = 100,
    ) -> None:
        self._client = httpx.AsyncClient(
            verify=verify,
            transport=transport,
            headers=headers,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

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
        try:
            response = await self._client.request(
                method,
                url,
                json=json,
                params=params,
                data=data,
                files=files,
                headers=headers or None,
                timeout=httpx.Timeout(timeouts.connect, read=timeouts.read),
                extensions={"sni_hostname": server_name} if server_name else None,
            )
        except httpx.TransportError as error:
            raise _mapped(error) from error
        return answer(response)

    async def aclose(self) -> None:
        await self._client.aclose()


def answer(response: httpx.Response) -> Answer:
    """An httpx response (read) as an :class:`~camunda_relay.http.Answer`, e.g. for
    :func:`camunda_relay.errors.from_response`."""
    return Answer(response.status_code, response.reason_phrase, response.headers, response.content)


def _mapped(error: httpx.TransportError) -> HttpError:
    kind = type(error).__name__
    message = str(error) or kind
    tls = find_ssl_error(error)
    if tls is not None:
        return TlsFailed(message, kind=kind, ssl_error=tls)
    if isinstance(error, httpx.TimeoutException):
        return TimedOut(message, kind=kind)
    if isinstance(error, httpx.ConnectError):
        return ConnectFailed(message, kind=kind)
    return ConnectionLost(message, kind=kind)
