"""OAuth2 client credentials (RFC 6749 §4.4): an access token for the engine's REST API.

:class:`TokenProvider` asks the identity provider's token endpoint for a token, keeps it,
and asks again a margin before it expires (on the injected :class:`~camunda_relay.clock.Clock`).
Requests that need a token while one is being fetched wait for that one fetch (single
flight). When the identity provider refuses, the error names the token URL and the status,
never the secret or a token; when it cannot be reached or answers 5xx, the next attempt waits
out a capped exponential backoff, so a worker loop never hammers a provider that is down.

The provider knows no HTTP library: it is given a :data:`PostForm` callable (the transport
passes one built on its own client), and the transport asks it for the ``Authorization``
header per request (:meth:`TokenProvider.header`) and, on a 401 from the engine, invalidates
the token it sent (:meth:`TokenProvider.invalidate`) and retries once.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import quote

from camunda_relay import errors
from camunda_relay.backoff import Backoff
from camunda_relay.clock import SYSTEM, Clock

__all__ = ["ClientCredentials", "PostForm", "TokenProvider", "shown_token_url"]

_log = logging.getLogger(__name__)

PostForm = Callable[[str, Mapping[str, str], Mapping[str, str]], Awaitable[tuple[int, bytes]]]
"""``post(url, form, headers) -> (status, body)``: one form POST; raises
:class:`~camunda_relay.errors.EngineUnavailable` (or another ``EngineError``) when the
endpoint cannot be reached."""

REFRESH_MARGIN = timedelta(seconds=30)
"""A token is renewed this long before it expires (at half its life, if that is later)."""
DEFAULT_LIFETIME = timedelta(minutes=5)
"""Assumed when the token endpoint gives no ``expires_in``."""
IDP_BACKOFF = Backoff(base=timedelta(seconds=1), cap=timedelta(seconds=60))

_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/?#@]*@", re.IGNORECASE)


def shown_token_url(url: str) -> str:
    """``url`` as it may be printed: scheme, host, port and path, without the credentials,
    query or fragment a token URL may carry."""
    return _USERINFO.sub(r"\1", re.split(r"[?#]", url, maxsplit=1)[0])


@dataclass(frozen=True)
class ClientCredentials:
    """Who the worker is at the identity provider. ``auth_method``: ``basic`` sends the
    client id and secret as HTTP Basic (RFC 6749 §2.3.1, the default), ``post`` in the form."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    audience: str | None = None
    auth_method: str = "basic"

    def form(self) -> tuple[dict[str, str], dict[str, str]]:
        """The token request's form fields and headers."""
        form = {"grant_type": "client_credentials"}
        headers = {"Accept": "application/json"}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["audience"] = self.audience
        if self.auth_method == "post":
            form["client_id"] = self.client_id
            form["client_secret"] = self.client_secret
        else:
            pair = f"{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return form, headers


@dataclass
class _Token:
    value: str
    renew_at: float  # monotonic


class TokenProvider:
    """A cached client-credentials token, renewed before it expires, fetched once at a time."""

    def __init__(
        self,
        credentials: ClientCredentials,
        post: PostForm,
        *,
        clock: Clock = SYSTEM,
        margin: timedelta = REFRESH_MARGIN,
        backoff: Backoff = IDP_BACKOFF,
    ) -> None:
        self._credentials = credentials
        self._post = post
        self._clock = clock
        self._margin = margin.total_seconds()
        self._backoff = backoff
        self._token: _Token | None = None
        self._fetching: asyncio.Future[_Token] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: errors.EngineError | None = None
        self.fetches = 0
        """How many token requests were sent (for tests and metrics)."""

    async def header(self) -> str:
        """The ``Authorization`` header value for the next request to the engine."""
        return f"Bearer {(await self._current()).value}"

    def invalidate(self, header: str) -> None:
        """The engine refused ``header`` (a 401): forget that token, if it is still the one
        kept, so the next :meth:`header` fetches a new one."""
        if self._token is not None and header == f"Bearer {self._token.value}":
            self._token = None

    async def _current(self) -> _Token:
        token = self._token
        if token is not None and self._clock.monotonic() < token.renew_at:
            return token
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
            self._fetching.add_done_callback(self._fetched)
        return await asyncio.shield(self._fetching)

    def _fetched(self, future: asyncio.Future[_Token]) -> None:
        self._fetching = None
        if not future.cancelled() and future.exception() is None:
            self._token = future.result()

    async def _fetch(self) -> _Token:
        wait = self._retry_at - self._clock.monotonic()
        if self._last_error is not None and wait > 0:
            # The provider failed recently: no tight loop. A copy each time, so the kept
            # error does not collect one more traceback (and its frames) at every raise.
            raise copy.copy(self._last_error).with_traceback(None)
        url = self._credentials.token_url
        form, headers = self._credentials.form()
        self.fetches += 1
        try:
            status, body = await self._post(url, form, headers)
            token = self._parse(status, body)
        except errors.EngineError as error:
            self._failed(error)
            raise
        self._failures = 0
        self._last_error = None
        return token

    def _failed(self, error: errors.EngineError) -> None:
        self._last_error = copy.copy(error).with_traceback(None)  # no frames kept
        self._retry_at = self._clock.monotonic() + self._backoff.ceiling(self._failures)
        self._failures += 1
        _log.warning("%s", error)

    def _parse(self, status: int, body: bytes) -> _Token:
        where = f"token request to {shown_token_url(self._credentials.token_url)}"
        if status >= 500 or status == 429:
            raise errors.EngineUnavailable(
                "the identity provider is unavailable", status=status, request=where
            )
        if status != 200:
            raise errors.TokenRefused(
                f"the identity provider refused the client credentials{_oauth_error(body)}",
                status=status,
                request=where,
            )
        try:
            answer = json.loads(body)
            value = answer["access_token"]
            expires_in = float(answer.get("expires_in") or DEFAULT_LIFETIME.total_seconds())
        except (ValueError, KeyError, TypeError):
            answer, value, expires_in = None, None, 0.0
        if not isinstance(value, str) or not value or expires_in <= 0:
            raise errors.TokenRefused(
                "the identity provider's answer holds no usable access_token", request=where
            )
        lifetime = max(expires_in - self._margin, expires_in / 2)
        return _Token(value, self._clock.monotonic() + lifetime)


def _oauth_error(body: bytes) -> str:
    """``: invalid_client`` from an RFC 6749 §5.2 error answer (the code only, a known
    short token of letters and underscores; nothing else of the body is shown)."""
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    if isinstance(code, str) and code.replace("_", "").isalpha() and len(code) <= 40:
        return f": {code}"
    return ""
