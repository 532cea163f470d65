"""The aiohttp implementation of :class:`~camunda_relay.http.HttpStack`: what an engine
client runs on against a real engine.

One ``aiohttp.ClientSession`` per stack, opened on the first request (inside the running
loop, as aiohttp wants) and closed by :meth:`AiohttpStack.aclose`. Its connector keeps up to
``connections`` connections alive (5 s idle, as httpx did) and never follows a redirect.
Request bodies are encoded here, as httpx encoded them (compact JSON, UTF-8; url-encoded or
multipart forms). No cookies are kept. A proxy from ``HTTP_PROXY``/``HTTPS_PROXY``/
``NO_PROXY`` is looked up once per origin (aiohttp's ``trust_env`` would look it up, and
``.netrc``, on a thread for every request).
"""

from __future__ import annotations

import base64
import json as _json
import os
import ssl
from collections.abc import Mapping
from urllib.parse import urlencode

import aiohttp
import certifi
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

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

__all__ = ["AiohttpStack"]

KEEPALIVE_SECONDS = 5.0  # httpx's keep-alive expiry: shorter than the engine's (Tomcat: 20 s)
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_KEPT = 64  # timeouts and proxy choices remembered (a worker uses two or three of each)


class AiohttpStack:
    """Requests on one ``aiohttp.ClientSession``; ``verify``: the TLS trust (an ``ssl``
    context, True for the default one, False for none)."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        headers: Mapping[str, str] | None = None,
        connections: int = 100,
    ) -> None:
        self._ssl: ssl.SSLContext | bool = verify
        self._headers = dict(headers or {})
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}
        self._proxies: dict[URL, tuple[URL | None, aiohttp.BasicAuth | None]] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the HTTP client is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._connections,
                limit_per_host=0,
                ssl=_default_trust() if self._ssl is True else self._ssl,
                keepalive_timeout=KEEPALIVE_SECONDS,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    def _timeout(self, timeouts: Timeouts) -> aiohttp.ClientTimeout:
        found = self._timeouts.get(timeouts)
        if found is None:
            found = aiohttp.ClientTimeout(
                total=None,
                connect=timeouts.connect,
                sock_connect=timeouts.connect,
                sock_read=timeouts.read,
            )
            if len(self._timeouts) >= _KEPT:
                self._timeouts.clear()
            self._timeouts[timeouts] = found
        return found

    def _proxy(self, url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        origin = url.origin()
        found = self._proxies.get(origin)
        if found is None:
            try:
                found = get_env_proxy_for_url(origin)
            except LookupError:
                found = (None, None)
            if len(self._proxies) >= _KEPT:
                self._proxies.clear()
            self._proxies[origin] = found
        return found

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
        session = self._open()
        target = URL(url)
        sent = dict(headers)
        if target.user is not None or target.password is not None:  # as httpx: Basic auth
            if "Authorization" not in sent:
                pair = f"{target.user or ''}:{target.password or ''}".encode()
                sent["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
            target = target.with_user(None)
        body = _body(sent, json, data, files)
        proxy, proxy_auth = self._proxy(target)
        try:
            async with session.request(
                method,
                target,
                headers=sent,
                data=body,
                params=params,
                timeout=self._timeout(timeouts),
                server_hostname=server_name,
                allow_redirects=False,
                proxy=proxy,
                proxy_auth=proxy_auth,
            ) as response:
                content = await response.read()
                return Answer(response.status, response.reason or "", response.headers, content)
        except (aiohttp.ClientError, OSError) as error:  # TimeoutError is an OSError
            raise _mapped(error) from error

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()


def _default_trust() -> ssl.SSLContext:
    """The CAs httpx trusted: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when set, else certifi's
    bundle (so a move between the two stacks changes no certificate's fate)."""
    cafile = os.environ.get("SSL_CERT_FILE")
    capath = os.environ.get("SSL_CERT_DIR")
    if cafile and os.path.isfile(cafile):
        return ssl.create_default_context(cafile=cafile)
    if capath and os.path.isdir(capath):
        return ssl.create_default_context(capath=capath)
    return ssl.create_default_context(cafile=certifi.where())


def _body(
    headers: dict[str, str],
    json: object,
    data: Mapping[str, str] | None,
    files: Files | None,
) -> bytes | aiohttp.FormData | None:
    """The request body, setting its ``Content-Type`` (a multipart form sets its own)."""
    if files:
        form = aiohttp.FormData()
        for name, value in (data or {}).items():
            form.add_field(name, value)
        for name, (filename, content, content_type) in files.items():
            form.add_field(name, content, filename=filename, content_type=content_type)
        return form
    if data is not None:
        headers["Content-Type"] = _FORM
        return urlencode(data).encode()
    if json is not None:
        headers["Content-Type"] = _JSON
        text = _json.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode()
    return None


def _mapped(error: BaseException) -> HttpError:
    kind = type(error).__name__
    message = str(error) or kind
    tls = find_ssl_error(error)
    if tls is not None:
        return TlsFailed(message, kind=kind, ssl_error=tls)
    if isinstance(error, TimeoutError):  # also aiohttp's ServerTimeoutError and its children
        return TimedOut(message, kind=kind)
    if isinstance(error, aiohttp.ClientConnectorError | aiohttp.InvalidURL):
        return ConnectFailed(message, kind=kind)  # not sent
    return ConnectionLost(message, kind=kind)
