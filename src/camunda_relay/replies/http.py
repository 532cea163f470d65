"""Deferred replies over HTTP: ``POST /reply`` on the worker's own HTTP server, for systems
that can only call a URL (:mod:`camunda_relay.replies.tokens` explains the tokens).

Off unless ``CAMUNDA_REPLY_SECRET`` is set: :func:`reply_routes` is then empty. A request
carries the secret as ``Authorization: Bearer <secret>`` (compared in constant time) and a
JSON body, ``{"token": "...", "variables": {"name": value}}`` or ``{"token": "...",
"failure": "reason"}``. Answers, JSON: 200 ``{"status": "accepted"}``; 400 a body that is
not one of those; 401 a missing or wrong secret; 404 unknown token; 409 used; 410 expired;
503 the journal does not answer. The token, the secret and the variables' values are
never logged.

A route is a :data:`RouteHandler`, ``(method, path, headers, body) -> (status, content
type, body)`` with header names in lower case, called from the server's thread (not an event
loop): each request opens the journal, answers, and closes it again.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from collections.abc import Callable, Mapping
from datetime import timedelta

from camunda_relay.errors import JournalError, JournalUnavailable, RelayError, ReplyTokenError
from camunda_relay.journal import Journal, open_journal
from camunda_relay.replies.tokens import fail_reply, send_reply
from camunda_relay.serve import MAX_BODY, RouteHandler
from camunda_relay.settings import Settings
from camunda_relay.tracing import remote_parent

__all__ = ["PATH", "reply_routes"]

log = logging.getLogger(__name__)

PATH = "/reply"
_JSON = "application/json"
_STATUS = {"unknown": 404, "used": 409, "expired": 410}


def reply_routes(
    settings: Settings, *, journal: Callable[[], Journal] | None = None
) -> dict[str, RouteHandler]:
    """``{"/reply": handler}`` when ``settings.reply_secret`` is set, else ``{}``.

    ``journal`` makes the journal each request uses (default: ``settings.journal``).
    """
    secret = settings.reply_secret
    if not secret:
        return {}
    opener = journal or (
        lambda: open_journal(
            settings.journal, owner=f"camunda-relay-reply-{os.getpid()}", lease=timedelta(0)
        )
    )
    return {PATH: _Endpoint(secret.encode(), opener)}


def _answer(code: int, **fields: object) -> tuple[int, str, bytes]:
    return code, _JSON, json.dumps(fields).encode()


class _Endpoint:
    def __init__(self, secret: bytes, journal: Callable[[], Journal]) -> None:
        self._secret = secret
        self._journal = journal

    def __call__(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        if path.split("?", 1)[0].rstrip("/") != PATH:
            return _answer(404, error="not found")
        if method.upper() != "POST":
            return _answer(405, error="use POST")
        if not self._authorized(headers.get("authorization", "")):
            log.warning("reply endpoint: a request without the right secret was refused")
            return _answer(401, error="missing or wrong secret (Authorization: Bearer ...)")
        if len(body) > MAX_BODY:
            return _answer(413, error=f"the body is over {MAX_BODY} bytes")
        try:
            token, variables, failure = _parse(body)
        except ValueError as error:
            return _answer(400, error=str(error))
        try:
            with remote_parent(headers):  # a traceparent header: the answer joins that trace
                asyncio.run(self._deliver(token, variables, failure))
        except ReplyTokenError as error:
            status = _STATUS.get(error.verdict, 400)
            log.info("reply endpoint: an answer was refused (%s)", error.verdict)
            return _answer(status, error=str(error))
        except JournalUnavailable as error:
            log.warning("reply endpoint: the journal does not answer (%s)", type(error).__name__)
            return _answer(503, error="the journal does not answer; try again later")
        except JournalError as error:
            log.error("reply endpoint: the journal failed (%s)", type(error).__name__)
            return _answer(500, error="the journal failed")
        except RelayError as error:  # a value that cannot be sent (names the variable only)
            return _answer(400, error=str(error))
        log.info("reply endpoint: an answer was accepted")
        return _answer(200, status="accepted")

    def _authorized(self, header: str) -> bool:
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self._secret)

    async def _deliver(
        self, token: str, variables: Mapping[str, object] | None, failure: str | None
    ) -> None:
        journal = self._journal()
        try:
            if failure is not None:
                await fail_reply(journal, token, failure)
            else:
                await send_reply(journal, token, variables)
        finally:
            await journal.close()


def _parse(body: bytes) -> tuple[str, Mapping[str, object] | None, str | None]:
    try:
        data = json.loads(body or b"null")
    except (ValueError, RecursionError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("token"), str):
        raise ValueError('expected {"token": "...", "variables": {...}} or {"token", "failure"}')
    unknown = set(data) - {"token", "variables", "failure"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    variables, failure = data.get("variables"), data.get("failure")
    if variables is not None and failure is not None:
        raise ValueError("give either variables or failure, not both")
    if variables is not None and not isinstance(variables, dict):
        raise ValueError("variables must be a JSON object of names to values")
    if failure is not None and not isinstance(failure, str):
        raise ValueError("failure must be text (the incident's message)")
    return data["token"], variables, failure
