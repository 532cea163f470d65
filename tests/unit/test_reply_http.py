"""POST /reply on the worker's HTTP server: what it answers, that neither the token, the
secret nor a value reaches a log line, the secret checked before the body is read, one
journal for every answer (the worker's own when shared, a memory one included), and
refusals logged at a bounded rate."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from camunda_relay import ConfigurationError, MemoryJournal, Settings, SettingsError
from camunda_relay.journal import Journal
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.http import reply_routes
from camunda_relay.replies.job import JobState
from camunda_relay.replies.tokens import new_token
from camunda_relay.serve import MAX_BODY, HttpServer, Routes
from camunda_relay.worker.health import Verdict
from tests.support.journals import make_job

SECRET = "a-long-enough-reply-secret"
AUTH = {"authorization": f"Bearer {SECRET}"}


def _ok() -> Verdict:
    return Verdict(True)


class Server:
    """The worker's HTTP server with ``routes``, and a client for it."""

    def __init__(self, routes: Routes) -> None:
        self.http = HttpServer(
            "127.0.0.1", 0, registry=CollectorRegistry(), live=_ok, ready=_ok, routes=routes
        )
        self.http.start()
        self.url = f"http://127.0.0.1:{self.http.port}/reply"

    def post(self, body: object, headers: dict[str, str] = AUTH) -> tuple[int, dict[str, str]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = httpx.post(self.url, content=raw, headers=headers, timeout=30)
        assert answer.headers["content-type"] == "application/json"
        return answer.status_code, answer.json()


@pytest.fixture
def served() -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.http.close()


def serve_file(served: list[Server], path: Path, **options: object) -> Server:
    settings = Settings(journal=str(path), reply_secret=SECRET)
    server = Server(reply_routes(settings, **options))  # type: ignore[arg-type]
    served.append(server)
    return server


def deferred_file(path: Path, deadline: float) -> str:
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


def test_the_endpoint_is_off_without_a_secret_and_refuses_a_short_one() -> None:
    assert reply_routes(Settings()) == {}
    with pytest.raises(SettingsError, match="at least 16 characters"):
        Settings(reply_secret="short")
    assert SECRET not in repr(Settings(reply_secret=SECRET))


def test_an_answer_is_kept_once_repeated_alike_and_nothing_secret_is_logged(
    tmp_path: Path, served: list[Server], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.sqlite3"
    token = deferred_file(path, deadline=4e9)
    server = serve_file(served, path)
    caplog.set_level(logging.DEBUG)
    body = {"token": token, "variables": {"card": "4111-secret-value"}}
    assert server.post(body, {"authorization": "Bearer wrong"})[0] == 401
    assert server.post(body) == (200, {"status": "accepted"})
    assert server.post(body) == (200, {"status": "accepted"}), "a retry of the same answer"
    other = {"token": token, "variables": {"card": "another-value"}}
    status, answer = server.post(other)
    assert status == 409
    assert "answered already" in answer["error"]
    logged = caplog.text
    for secret in (token, SECRET, "4111-secret-value"):
        assert secret not in logged


def test_an_expired_token_and_bad_bodies_are_told_apart(
    tmp_path: Path, served: list[Server]
) -> None:
    path = tmp_path / "journal.sqlite3"
    token = deferred_file(path, deadline=1e9)  # passed long ago
    server = serve_file(served, path)
    assert server.post({"token": token, "failure": "declined"})[0] == 410
    assert server.post({"token": token, "variables": {}, "failure": "x"})[0] == 400
    assert server.post({"token": token, "extra": 1})[0] == 400
    assert server.post({"token": 7})[0] == 400
    assert server.post(b"\xff")[0] == 400
    too_large = httpx.post(server.url, content=b" " * (MAX_BODY + 1), headers=AUTH, timeout=30)
    assert too_large.status_code == 413


def test_every_journal_verdict_has_its_status_in_one_mapping() -> None:
    from camunda_relay.journal.base import Verdict as JournalVerdict
    from camunda_relay.replies.http import HTTP_STATUS

    assert set(HTTP_STATUS) == {verdict.value for verdict in JournalVerdict}
    assert HTTP_STATUS["accepted"] == 200


# -- the secret before the body ----------------------------------------------------------------


def test_the_secret_is_checked_before_the_body_is_read(
    tmp_path: Path, served: list[Server]
) -> None:
    """A request announcing a 1 MiB body with a wrong secret is refused at once, without
    waiting for (or holding) the body."""
    server = serve_file(served, tmp_path / "journal.sqlite3")
    head = (
        "POST /reply HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer wrong\r\n"
        f"Content-Type: application/json\r\nContent-Length: {MAX_BODY}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.http.port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401 ")


def test_many_requests_with_a_wrong_secret_are_one_warning(
    tmp_path: Path, served: list[Server], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve_file(served, tmp_path / "journal.sqlite3")
    caplog.set_level(logging.DEBUG)
    statuses = {server.post({"token": "x"}, {"authorization": "Bearer no"})[0] for _ in range(100)}
    assert statuses == {401}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


# -- one journal -------------------------------------------------------------------------------


def test_the_journal_is_opened_once_for_every_answer(tmp_path: Path, served: list[Server]) -> None:
    path = tmp_path / "journal.sqlite3"
    token = deferred_file(path, deadline=4e9)
    opened: list[SqliteJournal] = []

    def opener() -> Journal:
        opened.append(SqliteJournal(path, owner="reply", lease=timedelta(0)))
        return opened[-1]

    server = serve_file(served, path, journal=opener)
    statuses = [server.post({"token": token, "variables": {}})[0] for _ in range(4)]
    statuses.append(server.post({"token": token, "variables": {"other": 1}})[0])
    assert statuses == [200, 200, 200, 200, 409]  # the same answer again, then another one
    assert len(opened) == 1


def test_a_memory_journal_without_the_worker_is_refused_in_one_line() -> None:
    settings = Settings(journal=":memory:", reply_secret=SECRET)
    with pytest.raises(ConfigurationError) as raised:
        reply_routes(settings)
    assert "\n" not in str(raised.value)
    assert ":memory:" in str(raised.value)


def test_a_memory_journal_is_shared_with_the_worker(served: list[Server]) -> None:
    """The worker's journal runs on the worker's loop; the endpoint answers through it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    journal = MemoryJournal(owner="worker", lease=timedelta(seconds=60))
    token, digest = new_token()
    job = make_job(1, state=JobState.DEFERRED, token_hash=digest, deadline=4e9)
    asyncio.run_coroutine_threadsafe(journal.save(job), loop).result(timeout=30)
    try:
        settings = Settings(journal=":memory:", reply_secret=SECRET)
        server = Server(reply_routes(settings, shared=(journal, loop)))
        served.append(server)
        first = server.post({"token": token, "variables": {"var2": "x"}})
        second = server.post({"token": token, "variables": {"var2": "x"}})
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
    assert first == (200, {"status": "accepted"})
    assert second == (200, {"status": "accepted"})  # the same answer again is accepted again


# -- the secret as loaded ------------------------------------------------------------------------


def test_a_secret_from_a_file_loses_its_newline_and_one_with_inner_space_is_refused() -> None:
    loaded = Settings.load({"CAMUNDA_REPLY_SECRET": SECRET + "\n"})
    assert loaded.reply_secret == SECRET
    with pytest.raises(SettingsError) as raised:
        Settings.load({"CAMUNDA_REPLY_SECRET": "two words of secret text\n"})
    assert "\n" not in str(raised.value)
    assert "whitespace" in str(raised.value)
    assert "two words" not in str(raised.value)


def test_a_stopping_worker_answers_503_while_its_probes_go_on(
    tmp_path: Path, served: list[Server]
) -> None:
    """The worker command closes the routes before the worker's journal: an answer in the
    shutdown's grace period is a 503 (try again), not a failure on a closed journal."""
    path = tmp_path / "journal.sqlite3"
    token = deferred_file(path, deadline=4e9)
    server = serve_file(served, path)
    server.http.close_routes()
    status, answer = server.post({"token": token, "variables": {}})
    probe = httpx.get(f"http://127.0.0.1:{server.http.port}/healthz", timeout=30)
    assert (status, answer) == (503, {"error": "the journal does not answer; try again later"})
    assert probe.status_code == 200
