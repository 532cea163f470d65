"""The HTTP side of the engine client: one :class:`~camunda_relay.http.HttpStack` (aiohttp
against a real engine, httpx when given an httpx transport), the in-flight gate, and
:meth:`Transport._send`, the one place where engine answers and connection failures become
the exceptions of :mod:`camunda_relay.errors`.

Log lines (DEBUG, ``camunda_relay.transport``) name the method, path, status and duration of
each request; never a body, a variable value or a credential.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from camunda_relay import errors
from camunda_relay._version import __version__
from camunda_relay.http import (
    Answer,
    ConnectFailed,
    Files,
    HttpError,
    HttpStack,
    TimedOut,
    Timeouts,
)
from camunda_relay.http.aiohttp_stack import AiohttpStack
from camunda_relay.http.httpx_stack import HttpxStack
from camunda_relay.nodes import Node, Nodes
from camunda_relay.oauth import ClientCredentials, TokenProvider, shown_token_url
from camunda_relay.settings import Settings
from camunda_relay.variables import encode_all

__all__ = ["MAX_CONCURRENT_REQUESTS", "Transport"]

_log = logging.getLogger(__name__)

# Requests in flight per client, long polls not counted. The others wait at this gate, in
# order, not in the HTTP stack's connection pool: the pool holds MAX_CONCURRENT_REQUESTS +
# _LONG_POLL_CONNECTIONS connections, so a long poll always finds one free, however many
# replies are due (in a pool shared with them, a poll would queue behind thousands). With
# httpx the gate was needed for a second reason: httpcore's pool scans its whole queue for
# every request, so with 10,000 replies due its cost grew with the square of the queue and
# the worker livelocked (99 delivered in two minutes; with the gate, all 10,000 in 60 s).
MAX_CONCURRENT_REQUESTS = 32
_LONG_POLL_CONNECTIONS = 16  # long polls bypass the gate; a worker runs one per engine node
MAX_HOMES = 100_000  # task and instance ids whose locking node is remembered

_Params = Mapping[str, str | int]


def _ms(duration: timedelta) -> int:
    return int(duration / timedelta(milliseconds=1))


def _segment(value: str) -> str:
    """An id as one URL path segment (a ``/`` in it cannot reach another resource)."""
    if not value:
        raise errors.InvalidInput("an id in a request path must not be empty")
    return quote(value, safe="")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _query(**params: str | int | bool | None) -> dict[str, str | int]:
    """Query parameters in the engine's spelling, leaving out the unset ones."""
    return {
        key: _flag(value) if isinstance(value, bool) else value
        for key, value in params.items()
        if value is not None
    }


def _auth(settings: Settings) -> str | None:
    """The static ``Authorization`` header: a bearer token, or HTTP Basic (UTF-8)."""
    if settings.token:
        return f"Bearer {settings.token}"
    if settings.user:
        pair = f"{settings.user}:{settings.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    return None


def _credentials(settings: Settings) -> ClientCredentials | None:
    if not (settings.oauth_token_url and settings.oauth_client_id):
        return None
    return ClientCredentials(
        settings.oauth_token_url,
        settings.oauth_client_id,
        settings.oauth_client_secret or "",
        scope=settings.oauth_scope,
        audience=settings.oauth_audience,
        auth_method=settings.oauth_client_auth,
    )


def _verify(settings: Settings) -> ssl.SSLContext | bool:
    if not settings.tls_verify:
        return False
    if settings.ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    except (OSError, ssl.SSLError) as error:
        raise errors.ConfigurationError(
            f"cannot use CAMUNDA_CA_BUNDLE {settings.ca_bundle}: {error}"
        ) from None


class Transport:
    """Requests to the engine's REST API with typed errors (the base of the engine client).

    ``transport`` replaces the network (``httpx.MockTransport`` or an in-process fake engine):
    the requests then go through httpx (:mod:`camunda_relay.http.httpx_stack`); without it,
    through aiohttp. ``stack``: any other :class:`~camunda_relay.http.HttpStack`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        stack: HttpStack | None = None,
    ) -> None:
        self._settings = settings
        # Whether the engine stores Json variables: None until told (EngineClient.stores_json,
        # or an answer refusing one); False makes a Json value fail before it is sent.
        self.json_variables: bool | None = None
        self._timeout = Timeouts.each(settings.request_timeout.total_seconds())
        self._authorization = _auth(settings)
        self._gate = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self.nodes = Nodes(settings.urls, resolve=settings.url_resolve == "all")
        self._homes: OrderedDict[str, Node] = OrderedDict()
        self._http = stack or _stack(settings, transport)

        credentials = _credentials(settings)
        self.tokens = TokenProvider(credentials, self._post_form) if credentials else None
        """OAuth2 client credentials: the ``Authorization`` header of each request."""

    async def _post_form(
        self, url: str, form: Mapping[str, str], headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        """The token request (:mod:`camunda_relay.oauth`), on this client, without the
        engine's credentials."""
        try:
            answer = await self._http.request(
                "POST", url, headers=headers, data=form, timeouts=self._timeout
            )
        except HttpError as error:
            where = f"token request to {shown_token_url(url)}"
            mapped = errors.from_transport_error(error, where)
            if isinstance(mapped, errors.TlsError):
                raise mapped from error
            reason = "timed out" if isinstance(error, TimedOut) else "not reachable"
            raise errors.EngineUnavailable(
                f"the identity provider is {reason} ({error.kind})", request=where
            ) from error
        return answer.status, answer.body

    def remember(self, key: str, node: Node) -> None:
        """``key`` (a task or process instance id) was locked at ``node``: its requests go
        there first (the most recent :data:`MAX_HOMES` keys are kept)."""
        self._homes[key] = node
        self._homes.move_to_end(key)
        while len(self._homes) > MAX_HOMES:
            self._homes.popitem(last=False)

    def home(self, key: str | None) -> Node | None:
        """The node ``key`` was locked at, if known."""
        return self._homes.get(key) if key is not None else None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _encode(self, values: Mapping[str, object]) -> dict[str, dict[str, object]]:
        """Variables for a request body; Json refused here when the engine stores none."""
        return encode_all(values, json_variables=self.json_variables is not False)

    # -- the one place that talks to the engine ------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: _Params | None = None,
        data: Mapping[str, str] | None = None,
        files: Files | None = None,
        timeouts: Timeouts | None = None,
        anonymous: bool = False,
        gated: bool = True,
        node: Node | None = None,
        prefer: Node | None = None,
    ) -> Answer:
        """Send one request; return a 2xx answer or raise the mapped :class:`EngineError`.

        At most :data:`MAX_CONCURRENT_REQUESTS` requests are in flight; the others wait here,
        in order. ``gated=False`` (the long poll) bypasses the gate: a poll waiting for tasks
        must not hold a slot that a completion or a reply needs. ``node``: that engine node
        only; None: the node that answered last, then the others when it cannot be
        connected to (:mod:`camunda_relay.nodes`); ``prefer``: that node first, then those.
        """
        args = (method, path, json, params, data, files, timeouts, anonymous, node, prefer)
        if not gated:
            return await self._request(*args)
        async with self._gate:
            return await self._request(*args)

    async def _request(
        self,
        method: str,
        path: str,
        json: object,
        params: _Params | None,
        data: Mapping[str, str] | None,
        files: Files | None,
        timeouts: Timeouts | None,
        anonymous: bool,
        node: Node | None,
        prefer: Node | None,
    ) -> Answer:
        label = f"{method} {path}"
        targets = [node] if node is not None else self.nodes.ordered()
        if node is None and prefer is not None and prefer in targets:
            targets.remove(prefer)
            targets.insert(0, prefer)
        tokens = None if anonymous else self.tokens
        for index, target in enumerate(targets):
            started = time.monotonic()
            headers = {"Host": target.host} if target.host else {}
            if self._authorization is not None and not anonymous:
                headers["Authorization"] = self._authorization
            try:
                for fresh in (False, True):  # with a token: once more on a 401, a new token
                    if tokens is not None:
                        headers["Authorization"] = await tokens.header()
                    response = await self._http.request(
                        method,
                        target.url + path,
                        headers=headers,
                        timeouts=timeouts or self._timeout,
                        json=json,
                        data=data,
                        files=files,
                        params=params,
                        server_name=target.server_name,
                    )
                    if tokens is None or response.status != 401 or fresh:
                        break
                    tokens.invalidate(headers["Authorization"])
                    _log.debug("%s -> 401: retrying with a new token", label)
            except HttpError as error:
                _log.debug(
                    "%s failed after %.0f ms: %s%s",
                    label,
                    _elapsed_ms(started),
                    error.kind,
                    f" (node {target.label})" if len(self.nodes.current) > 1 else "",
                )
                if isinstance(error, ConnectFailed) and index + 1 < len(targets):
                    continue  # not sent: the next node may take it
                raise errors.from_transport_error(error, label) from error
            _log.debug("%s -> %d in %.0f ms", label, response.status, _elapsed_ms(started))
            if response.is_success:
                if node is None:
                    self.nodes.answered(target)
                return response
            refused = errors.from_response(response, label)
            if _node_failed(refused):
                if index + 1 < len(targets):
                    continue  # the node could not do it (nothing committed): the next may
            elif node is None:
                self.nodes.answered(target)
            if isinstance(refused, errors.JsonUnsupported):
                self.json_variables = False
            raise refused
        raise AssertionError("unreachable: no node to send to")

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise errors.EngineError(
                "the engine's answer is not JSON (is CAMUNDA_URL the REST API?)",
                status=response.status,
                request=f"{method} {path}",
            ) from None

    async def _list(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        result = await self._json(method, path, **kwargs)
        if not isinstance(result, list):
            raise errors.EngineError("expected a list from the engine", request=f"{method} {path}")
        return result

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        result = await self._json(method, path, **kwargs)
        if not isinstance(result, dict):
            raise errors.EngineError(
                "expected an object from the engine", request=f"{method} {path}"
            )
        return result

    async def _optional(self, path: str) -> dict[str, Any] | None:
        """GET one resource; None when the engine says it does not exist (404)."""
        try:
            return await self._object("GET", path)
        except errors.NotFound:
            return None


def _stack(settings: Settings, transport: httpx.AsyncBaseTransport | None) -> HttpStack:
    """httpx on ``transport`` when one is given (a fake engine), else aiohttp. Every gated
    request and every long poll keeps its connection between requests."""
    headers = {"Accept": "application/json", "User-Agent": f"camunda-relay/{__version__}"}
    connections = MAX_CONCURRENT_REQUESTS + _LONG_POLL_CONNECTIONS
    if transport is not None:
        return HttpxStack(
            transport=transport,
            verify=_verify(settings),
            headers=headers,
            connections=connections,
        )
    return AiohttpStack(verify=_verify(settings), headers=headers, connections=connections)


def _node_failed(error: errors.EngineError) -> bool:
    """A 5xx that says the node cannot work now (a 502/503/504, a 500 such as a lost database
    connection), not the engine's verdict on the request: the node is not preferred for it,
    and the request goes on to the next node. An optimistic locking failure and a refused
    Json value are verdicts, answered the same by every node."""
    if isinstance(error, errors.ConcurrentModification | errors.JsonUnsupported):
        return False
    return isinstance(error, errors.EngineUnavailable | errors.ServerError)


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000
