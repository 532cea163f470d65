"""Deferred replies over HTTP: ``POST /reply`` on the worker's own HTTP server, for systems
that can only call a URL (:mod:`camunda_relay.replies.tokens` explains the tokens).

Off unless ``CAMUNDA_REPLY_SECRET`` is set: :func:`reply_routes` is then empty. A request
carries the secret as ``Authorization: Bearer <secret>`` (compared in constant time, before
the body is read) and a JSON body, ``{"token": "...", "variables": {"name": value}}`` or
``{"token": "...", "failure": "reason"}``. Answers, JSON: 200 ``{"status": "accepted"}``; 400
a body that is not one of those; 401 a missing or wrong secret; 404 unknown token; 409 used;
410 expired, or "the process instance was cancelled"; 503 the journal does not answer. The
token, the secret and the variables' values are never logged; refusals are logged at a
bounded rate.

The endpoint answers through one journal, opened once and kept until the server closes:
the worker's own journal when it is given (``shared``: the journal and the event loop it
runs on; a ``:memory:`` journal works only so), else its own of ``settings.journal``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from datetime import timedelta

from camunda_relay.errors import (
    ConfigurationError,
    JournalError,
    JournalUnavailable,
    RelayError,
    ReplyTokenError,
)
from camunda_relay.journal import Journal, open_journal
from camunda_relay.journal.base import Verdict
from camunda_relay.replies.tokens import fail_reply, send_reply
from camunda_relay.serve import MAX_BODY, REQUEST_DEADLINE, Answer, Route
from camunda_relay.settings import Settings
from camunda_relay.throttled_log import ThrottledLog
from camunda_relay.tracing import remote_parent

__all__ = ["HTTP_STATUS", "PATH", "reply_routes"]

log = logging.getLogger(__name__)

PATH = "/reply"
_JSON = "application/json"
HTTP_STATUS: dict[str, int] = {
    Verdict.ACCEPTED.value: 200,
    Verdict.UNKNOWN.value: 404,
    Verdict.USED.value: 409,
    Verdict.EXPIRED.value: 410,
    Verdict.CANCELLED.value: 410,
}
"""A journal :class:`~camunda_relay.journal.base.Verdict` (its value) as the endpoint's HTTP
status: the one place that maps them; a verdict not named here is a 400."""
JOURNAL_TIMEOUT = REQUEST_DEADLINE / 2
"""Seconds an answer may wait for the journal before the endpoint answers 503."""


def reply_routes(
    settings: Settings,
    *,
    journal: Callable[[], Journal] | None = None,
    shared: tuple[Journal, asyncio.AbstractEventLoop] | None = None,
) -> dict[str, Route]:
    """``{"/reply": route}`` when ``settings.reply_secret`` is set, else ``{}``.

    ``shared``: the worker's journal and the loop it runs on, used for every answer;
    otherwise ``journal`` makes the endpoint's own journal once (default: one of
    ``settings.journal``). A ``:memory:`` journal that is not shared is refused
    (:class:`ConfigurationError`, one line): answers written to a journal of their own
    would never reach the worker.
    """
    secret = settings.reply_secret
    if not secret:
        return {}
    if shared is None and journal is None and settings.journal == ":memory:":
        raise ConfigurationError(
            "CAMUNDA_REPLY_SECRET with CAMUNDA_JOURNAL=:memory:: POST /reply cannot reach the "
            "worker's memory journal here; use a SQLite file or PostgreSQL journal"
        )
    opener = journal or (
        lambda: open_journal(
            settings.journal, owner=f"camunda-relay-reply-{os.getpid()}", lease=timedelta(0)
        )
    )
    return {PATH: _Endpoint(secret.encode(), _JournalAccess(opener, shared))}


class _JournalAccess:
    """One journal for every answer: the worker's (called on its loop) or one of its own,
    opened on first use and closed with the server."""

    def __init__(
        self,
        opener: Callable[[], Journal],
        shared: tuple[Journal, asyncio.AbstractEventLoop] | None,
    ) -> None:
        self._opener = opener
        self._shared = shared
        self._own: Journal | None = None
        self._closed = False

    async def run(self, call: Callable[[Journal], Coroutine[None, None, None]]) -> None:
        if self._closed:
            raise JournalUnavailable("the worker is stopping")
        if self._shared is None:
            if self._own is None:
                self._own = self._opener()
            await asyncio.wait_for(call(self._own), JOURNAL_TIMEOUT)
            return
        journal, loop = self._shared
        if loop is asyncio.get_running_loop():
            await asyncio.wait_for(call(journal), JOURNAL_TIMEOUT)
            return
        if loop.is_closed() or not loop.is_running():
            raise JournalUnavailable("the worker's event loop has stopped")
        future = asyncio.run_coroutine_threadsafe(call(journal), loop)
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), JOURNAL_TIMEOUT)
        finally:
            future.cancel()

    async def close(self) -> None:
        """No more answers (503); the endpoint's own journal is closed, a shared one is the
        worker's to close."""
        self._closed = True
        own, self._own = self._own, None
        if own is not None:
            await own.close()


def _answer(code: int, **fields: object) -> Answer:
    return code, _JSON, json.dumps(fields).encode()


class _Endpoint(Route):
    def __init__(self, secret: bytes, journal: _JournalAccess) -> None:
        self._secret = secret
        self._journal = journal
        self._refusals = ThrottledLog(log)
        self._verdicts = ThrottledLog(log, level=logging.INFO)

    def admit(self, method: str, path: str, headers: Mapping[str, str]) -> Answer | None:
        if path.split("?", 1)[0].rstrip("/") != PATH:
            return _answer(404, error="not found")
        if method.upper() != "POST":
            return _answer(405, error="use POST")
        if not self._authorized(headers.get("authorization", "")):
            self._refusals.note(
                "secret", "reply endpoint: a request without the right secret was refused"
            )
            return _answer(401, error="missing or wrong secret (Authorization: Bearer ...)")
        return None

    async def answer(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Answer:
        refused = self.admit(method, path, headers)
        if refused is not None:
            return refused
        if len(body) > MAX_BODY:
            return _answer(413, error=f"the body is over {MAX_BODY} bytes")
        try:
            token, variables, failure = _parse(body)
        except ValueError as error:
            return _answer(400, error=str(error))
        with remote_parent(headers):  # a traceparent header: the answer joins that trace
            return await self._deliver(token, variables, failure)

    async def close(self) -> None:
        await self._journal.close()

    def _authorized(self, header: str) -> bool:
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self._secret)

    async def _deliver(
        self, token: str, variables: Mapping[str, object] | None, failure: str | None
    ) -> Answer:
        def call(journal: Journal) -> Coroutine[None, None, None]:
            if failure is not None:
                return fail_reply(journal, token, failure)
            return send_reply(journal, token, variables)

        try:
            await self._journal.run(call)
        except ReplyTokenError as error:
            status = HTTP_STATUS.get(error.verdict, 400)
            self._verdicts.note(
                error.verdict,
                f"reply endpoint: an answer was refused ({error.verdict})",
            )
            return _answer(status, error=str(error))
        except (JournalUnavailable, TimeoutError) as error:
            self._refusals.note(
                "journal",
                f"reply endpoint: the journal does not answer ({type(error).__name__})",
            )
            return _answer(503, error="the journal does not answer; try again later")
        except JournalError as error:
            log.error("reply endpoint: the journal failed (%s)", type(error).__name__)
            return _answer(500, error="the journal failed")
        except RelayError as error:  # a value that cannot be sent (names the variable only)
            return _answer(400, error=str(error))
        log.info("reply endpoint: an answer was accepted")
        return _answer(HTTP_STATUS[Verdict.ACCEPTED.value], status="accepted")


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
