"""Deferred replies against the real engine: the handler hands out a token, and the reply
comes from Python, the CLI or HTTP, as a failure, too late, twice, or while no worker runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from camunda_relay import (
    DeferReply,
    Reply,
    ReplyTokenError,
    Router,
    Settings,
    Task,
    Worker,
    fail_reply,
    send_reply,
)
from camunda_relay.cli.worker import worker_routes
from camunda_relay.journal import Journal, open_journal
from camunda_relay.serve import serve_worker
from tests.engine.test_worker import eventually, finished, run, settings_for, with_worker
from tests.support import postgres as pg
from tests.support.engine import PROCESS_KEY, Engine, assert_finished_once
from tests.support.postgres import PostgresServer
from tests.support.tools import free_port, run_cli

JOURNALS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SECRET = "s3cret-for-the-reply-endpoint"


@pytest.fixture(params=JOURNALS)
def journal_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "journal.sqlite3")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"deferred_{uuid.uuid4().hex[:8]}"
    server.create_database(name)
    return f"postgresql://{pg.USER}:{pg.PASSWORD}@127.0.0.1:{server.port}/{name}"


def deferring_router(tokens: dict[str, str], *, deadline: timedelta | None = None) -> Router:
    router = Router()

    @router.task("messageSending", reply=Reply("sample_response", deadline=deadline))
    async def hand_out(task: Task) -> dict[str, object]:
        assert task.reply_token is not None
        tokens[task.process_instance_id] = task.reply_token  # "sent to the payment provider"
        raise DeferReply

    return router


def worker_settings(engine: Engine, journal: str, **changes: Any) -> Settings:
    # A short lease: the claim round, which picks up answered jobs, runs every 0.5 s.
    return settings_for(engine, journal=journal, journal_lease=timedelta(seconds=1.5), **changes)


def other_process_journal(target: str) -> Journal:
    """The journal as a webhook handler in another process opens it."""
    journal = open_journal(target, owner=f"webhook-{uuid.uuid4().hex[:6]}", lease=timedelta(0))
    kind = "PostgresJournal" if target.startswith("postgresql://") else "SqliteJournal"
    assert type(journal).__name__ == kind
    return journal


async def start_and_get_token(worker: Worker, tokens: dict[str, str]) -> str:
    key = f"deferred-{uuid.uuid4().hex[:8]}"
    instance_id = str((await worker.client.start_process(PROCESS_KEY, business_key=key))["id"])

    async def handed_out() -> bool:
        return instance_id in tokens and worker.stats.replies_deferred > 0

    await eventually(handed_out, timeout=60, what="the reply token")
    return instance_id


async def answer(target: str, action: Callable[[Journal], Awaitable[None]]) -> None:
    journal = other_process_journal(target)
    try:
        await action(journal)
    finally:
        await journal.close()


def reply_value(rest: httpx.Client, instance_id: str) -> object:
    response = rest.get(
        "/history/variable-instance",
        params={"processInstanceId": instance_id, "variableName": "var2"},
    )
    (item,) = response.json()
    return item["value"]


def test_a_deferred_reply_is_delivered_from_python_once(
    engine: Engine, rest: httpx.Client, journal_target: str
) -> None:
    tokens: dict[str, str] = {}

    async def scenario(worker: Worker) -> str:
        instance_id = await start_and_get_token(worker, tokens)
        token = tokens[instance_id]
        await answer(
            journal_target, lambda j: send_reply(j, token, {"var1": 7, "var2": "from python"})
        )
        await eventually(lambda: finished(worker.client, [instance_id]), timeout=60, what="end")
        again = {"var1": 7, "var2": "from python"}  # a retry of the same answer: accepted
        await answer(journal_target, lambda j: send_reply(j, token, again))
        with pytest.raises(ReplyTokenError, match="answered already") as used:
            await answer(journal_target, lambda j: send_reply(j, token, {"var2": "again"}))
        assert token not in str(used.value)
        return instance_id

    instance_id = run(
        with_worker(deferring_router(tokens), worker_settings(engine, journal_target), scenario)
    )
    assert_finished_once(rest, instance_id)
    assert reply_value(rest, instance_id) == "from python"


def test_a_deferred_reply_is_delivered_from_the_cli(
    engine: Engine, rest: httpx.Client, tmp_path: Path
) -> None:
    target = str(tmp_path / "journal.sqlite3")
    tokens: dict[str, str] = {}
    env = {"CAMUNDA_JOURNAL": target}

    async def scenario(worker: Worker) -> str:
        instance_id = await start_and_get_token(worker, tokens)
        token = tokens[instance_id]
        done = await asyncio.to_thread(run_cli, "reply", token, "--var", "var2=from-cli", env=env)
        assert done.returncode == 0, done.stderr
        assert token not in done.stdout + done.stderr
        assert "from-cli" not in done.stdout + done.stderr, "no value in the output"
        await eventually(lambda: finished(worker.client, [instance_id]), timeout=60, what="end")
        again = await asyncio.to_thread(run_cli, "reply", token, "--fail", "late", env=env)
        assert again.returncode == 1
        assert again.stderr.strip().splitlines() == [
            "Error: this reply token was answered already, with another answer: a token takes "
            "one answer (the same answer again is accepted)"
        ]
        unknown = await asyncio.to_thread(run_cli, "reply", "no-such-token", env=env)
        assert unknown.returncode == 1
        assert len(unknown.stderr.strip().splitlines()) == 1
        assert "unknown reply token" in unknown.stderr
        return instance_id

    instance_id = run(
        with_worker(deferring_router(tokens), worker_settings(engine, target), scenario)
    )
    assert_finished_once(rest, instance_id)
    assert reply_value(rest, instance_id) == "from-cli"


def test_a_deferred_reply_is_delivered_over_http_behind_the_secret(
    engine: Engine, rest: httpx.Client, tmp_path: Path
) -> None:
    target = str(tmp_path / "journal.sqlite3")
    tokens: dict[str, str] = {}
    settings = worker_settings(engine, target, reply_secret=SECRET, http_port=free_port())
    assert worker_routes(worker_settings(engine, target)) == {}, "off without a secret"

    async def scenario(worker: Worker) -> str:
        # The worker's own HTTP server, with the routes `camunda-relay worker` gives it.
        assert settings.http_port is not None
        server = serve_worker(
            worker, "127.0.0.1", settings.http_port, routes=worker_routes(settings)
        )
        base = f"http://127.0.0.1:{settings.http_port}"
        try:
            return await answer_over_http(worker, base)
        finally:
            server.close()

    async def answer_over_http(worker: Worker, base: str) -> str:
        instance_id = await start_and_get_token(worker, tokens)
        body = {"token": tokens[instance_id], "variables": {"var2": "from http"}}
        async with httpx.AsyncClient(base_url=base) as web:
            wrong = await web.post("/reply", json=body, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            bare = await web.post("/reply", json=body)
            assert bare.status_code == 401
            auth = {"Authorization": f"Bearer {SECRET}"}
            assert (await web.get("/reply", headers=auth)).status_code == 405
            bad = await web.post("/reply", content=b"{not json", headers=auth)
            assert bad.status_code == 400
            done = await web.post("/reply", json=body, headers=auth)
            assert done.status_code == 200, done.text
            assert done.json() == {"status": "accepted"}
            again = await web.post("/reply", json=body, headers=auth)
            assert again.status_code == 200, "the same answer again (a lost response retried)"
            other = {**body, "variables": {"var2": "another"}}
            assert (await web.post("/reply", json=other, headers=auth)).status_code == 409
            unknown = await web.post("/reply", json={**body, "token": "x" * 43}, headers=auth)
            assert unknown.status_code == 404
        await eventually(lambda: finished(worker.client, [instance_id]), timeout=60, what="end")
        return instance_id

    instance_id = run(with_worker(deferring_router(tokens), settings, scenario))
    assert_finished_once(rest, instance_id)
    assert reply_value(rest, instance_id) == "from http"


def test_a_failure_sent_with_the_token_is_an_incident(
    engine: Engine, rest: httpx.Client, journal_target: str
) -> None:
    tokens: dict[str, str] = {}

    async def scenario(worker: Worker) -> str:
        instance_id = await start_and_get_token(worker, tokens)
        token = tokens[instance_id]
        await answer(journal_target, lambda j: fail_reply(j, token, "card declined"))

        async def incident() -> list[dict[str, Any]]:
            return await worker.client.incidents(process_instance_id=instance_id)

        await eventually(incident, timeout=60, what="an incident")
        return instance_id

    instance_id = run(
        with_worker(deferring_router(tokens), worker_settings(engine, journal_target), scenario)
    )
    (incident,) = rest.get("/incident", params={"processInstanceId": instance_id}).json()
    assert incident["incidentType"] == "camundaRelay"
    assert "answered with a failure: card declined" in incident["incidentMessage"]


def test_a_deferred_reply_past_its_deadline_is_an_incident_and_its_token_expired(
    engine: Engine, rest: httpx.Client, journal_target: str
) -> None:
    tokens: dict[str, str] = {}
    router = deferring_router(tokens, deadline=timedelta(seconds=1))

    async def scenario(worker: Worker) -> str:
        instance_id = await start_and_get_token(worker, tokens)

        async def incident() -> list[dict[str, Any]]:
            return await worker.client.incidents(process_instance_id=instance_id)

        await eventually(incident, timeout=60, what="an incident")
        with pytest.raises(ReplyTokenError, match="expired"):
            await answer(journal_target, lambda j: send_reply(j, tokens[instance_id], {}))
        return instance_id

    instance_id = run(with_worker(router, worker_settings(engine, journal_target), scenario))
    (incident,) = rest.get("/incident", params={"processInstanceId": instance_id}).json()
    assert "no answer within its deadline" in incident["incidentMessage"]


def test_a_reply_answered_while_no_worker_runs_is_delivered_after_the_restart(
    engine: Engine, rest: httpx.Client, journal_target: str
) -> None:
    tokens: dict[str, str] = {}
    settings = worker_settings(engine, journal_target, worker_id="restarting-worker")

    async def first(worker: Worker) -> str:
        return await start_and_get_token(worker, tokens)

    instance_id = run(with_worker(deferring_router(tokens), settings, first))
    token = tokens[instance_id]
    run(answer(journal_target, lambda j: send_reply(j, token, {"var2": "after restart"})))

    async def second(worker: Worker) -> None:
        await eventually(lambda: finished(worker.client, [instance_id]), timeout=60, what="end")

    run(with_worker(deferring_router({}), settings, second))
    assert_finished_once(rest, instance_id)
    assert reply_value(rest, instance_id) == "after restart"


def test_an_answer_that_comes_before_the_handler_defers_is_delivered(
    engine: Engine, rest: httpx.Client, tmp_path: Path
) -> None:
    """A fast webhook: the other system answers while the handler is still running."""
    target = str(tmp_path / "journal.sqlite3")
    router = Router()

    @router.task("messageSending", reply="sample_response")
    async def hand_out(task: Task) -> dict[str, object]:
        assert task.reply_token is not None
        token = task.reply_token
        await answer(target, lambda j: send_reply(j, token, {"var2": "answered early"}))
        raise DeferReply

    async def scenario(worker: Worker) -> str:
        key = f"early-{uuid.uuid4().hex[:8]}"
        started = await worker.client.start_process(PROCESS_KEY, business_key=key)
        instance_id = str(started["id"])
        await eventually(lambda: finished(worker.client, [instance_id]), timeout=60, what="end")
        return instance_id

    instance_id = run(with_worker(router, worker_settings(engine, target), scenario))
    assert_finished_once(rest, instance_id)
    assert reply_value(rest, instance_id) == "answered early"
