"""The POST /reply route handler (the worker's HTTP server calls it from a thread): what
it answers, and that neither the token, the secret nor a value reaches a log line."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from camunda_relay import Settings, SettingsError
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.http import MAX_BODY, reply_routes
from camunda_relay.replies.job import JobState
from camunda_relay.replies.tokens import new_token
from tests.support.journals import make_job

SECRET = "a-long-enough-reply-secret"
AUTH = {"authorization": f"Bearer {SECRET}"}


def deferred_job(path: Path, deadline: float) -> str:
    token, digest = new_token()
    job = make_job(1, state=JobState.DEFERRED, token_hash=digest, deadline=deadline)

    async def save() -> None:
        journal = SqliteJournal(path, owner="worker", lease=timedelta(0))
        try:
            await journal.save(job)
        finally:
            await journal.close()

    asyncio.run(save())
    return token


def post(path: Path, body: object, headers: dict[str, str] = AUTH) -> tuple[int, dict[str, str]]:
    settings = Settings(journal=str(path), reply_secret=SECRET)
    route = reply_routes(settings)["/reply"]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, kind, answer = route("POST", "/reply", headers, raw)
    assert kind == "application/json"
    return status, json.loads(answer)


def test_the_endpoint_is_off_without_a_secret_and_refuses_a_short_one() -> None:
    assert reply_routes(Settings()) == {}
    with pytest.raises(SettingsError, match="at least 16 characters"):
        Settings(reply_secret="short")
    assert SECRET not in repr(Settings(reply_secret=SECRET))


def test_an_answer_is_kept_once_repeated_alike_and_nothing_secret_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.sqlite3"
    token = deferred_job(path, deadline=4e9)
    caplog.set_level(logging.DEBUG)
    body = {"token": token, "variables": {"card": "4111-secret-value"}}
    assert post(path, body, {"authorization": "Bearer wrong"})[0] == 401
    assert post(path, body) == (200, {"status": "accepted"})
    assert post(path, body) == (200, {"status": "accepted"}), "a retry of the same answer"
    other = {"token": token, "variables": {"card": "another-value"}}
    status, answer = post(path, other)
    assert status == 409
    assert "answered already" in answer["error"]
    logged = caplog.text
    for secret in (token, SECRET, "4111-secret-value"):
        assert secret not in logged


def test_an_expired_token_and_bad_bodies_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    token = deferred_job(path, deadline=1e9)  # passed long ago
    assert post(path, {"token": token, "failure": "declined"})[0] == 410
    assert post(path, {"token": token, "variables": {}, "failure": "x"})[0] == 400
    assert post(path, {"token": token, "extra": 1})[0] == 400
    assert post(path, {"token": 7})[0] == 400
    assert post(path, b"\xff")[0] == 400
    assert post(path, b" " * (MAX_BODY + 1))[0] == 413
