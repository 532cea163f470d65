"""Cancellation's error paths against the in-process fake engine: what is cancelled, and,
above all, what never is (an engine outage, history that lags, an async continuation before
the catch event, a loop back to it). What Camunda itself does is tested against the real
engine in tests/engine/test_cancellation.py.

The watcher's loop is off (``cancel_check_interval`` 0); each test runs its rounds with
:meth:`Worker.check_cancelled`, so nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client import CollectorRegistry

from camunda_relay import (
    DeferReply,
    EngineClient,
    JobState,
    ReplyTokenError,
    Router,
    Settings,
    Task,
    Worker,
    send_reply,
)
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies import cancellation
from camunda_relay.replies.http import reply_routes
from camunda_relay.replies.tokens import new_token
from camunda_relay.serve import HttpServer
from camunda_relay.worker.health import Verdict as Health
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine, Fault
from tests.support.journals import make_job
from tests.support.tools import run_cli

T = TypeVar("T")

SECRET = "a-long-enough-reply-secret"
SETTINGS = Settings(
    url="http://fake-engine/engine-rest",
    retry_timeout=timedelta(milliseconds=10),
    journal=":memory:",
    cancel_check_interval=timedelta(0),
    cancel_grace=timedelta(milliseconds=200),
)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=60))


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition`` holds (the outer wait_for bounds it)."""
    while not condition():
        await asyncio.sleep(0.001)


class Blocked:
    """An async reply handler that waits until released, and notes a cancellation."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running: set[str] = set()
        self.cancelled: set[str] = set()

    def router(self) -> Router:
        router = Router()

        @router.task(TOPIC, reply=MESSAGE)
        async def handle(task: Task) -> dict[str, object]:
            self.running.add(task.process_instance_id)
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.add(task.process_instance_id)
                raise
            return {"done": True}

        return router


async def with_worker(
    fake: FakeEngine,
    router: Router,
    scenario: Callable[[Worker], Awaitable[T]],
    settings: Settings = SETTINGS,
) -> T:
    client = EngineClient(settings, transport=fake.transport())
    async with Worker(router, settings, client=client) as worker:
        once = asyncio.ensure_future(worker.run_once())
        try:
            return await scenario(worker)
        finally:
            await once


def test_a_cancelled_instance_cancels_its_running_handler_no_message_no_incident(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeEngine()
    gone, kept = fake.start("bk-gone"), fake.start("bk-kept")
    handler = Blocked()

    async def scenario(worker: Worker) -> dict[str, JobState]:
        await until(lambda: len(handler.running) == 2, "both handlers run")
        assert await worker.check_cancelled() == 0  # both wait at the catch event
        fake.cancel(gone)
        with caplog.at_level(logging.INFO, logger="camunda_relay"):
            assert await worker.check_cancelled() == 1
            await until(lambda: worker.stats.replies_cancelled == 1, "cancelled")
        handler.release.set()
        await worker.drain()
        return {job.task.process_instance_id: job.state for job in await worker.journal.jobs()}

    states = run(with_worker(fake, handler.router(), scenario))
    assert handler.cancelled == {gone}
    assert states == {gone: JobState.CANCELLED, kept: JobState.DELIVERED}
    assert fake.instances[gone].passages == 0
    assert fake.instances[kept].state == "completed"
    assert fake.incidents == []
    (line,) = [r for r in caplog.records if "cancelled, no message sent" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert gone in line.getMessage()
    assert "the process instance was cancelled" in line.getMessage()


def test_one_batched_runtime_query_a_round_when_every_instance_waits() -> None:
    fake = FakeEngine()
    for number in range(12):
        fake.start(f"bk-{number}")
    handler = Blocked()

    async def scenario(worker: Worker) -> list[str]:
        await until(lambda: len(handler.running) == 12, "handlers run")
        assert await worker.check_cancelled() == 0  # reads the model once (kept)
        fake.calls.clear()
        assert await worker.check_cancelled() == 0
        calls = list(fake.calls)
        handler.release.set()
        return calls

    calls = run(with_worker(fake, handler.router(), scenario))
    assert calls == ["POST /process-instance"]


def test_more_jobs_than_a_page_are_asked_about_in_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cancellation, "PAGE", 5)
    fake = FakeEngine()
    ids = [fake.start(f"bk-{number}") for number in range(12)]
    handler = Blocked()

    async def scenario(worker: Worker) -> list[str]:
        await until(lambda: len(handler.running) == 12, "handlers run")
        assert await worker.check_cancelled() == 0
        fake.calls.clear()
        fake.cancel(ids[0])
        fake.cancel(ids[11])  # in the first page and in the last
        assert await worker.check_cancelled() == 2
        calls = list(fake.calls)
        await until(lambda: worker.stats.replies_cancelled == 2, "both cancelled")
        handler.release.set()
        return calls

    calls = run(with_worker(fake, handler.router(), scenario))
    assert calls.count("POST /process-instance") == 3
    assert calls.count("POST /history/process-instance") == 1
    assert handler.cancelled == {ids[0], ids[11]}


@pytest.mark.parametrize("route", ["POST /process-instance", "POST /history/process-instance"])
def test_an_engine_outage_cancels_nothing(route: str) -> None:
    fake = FakeEngine(transit_polls=10_000)  # not at the catch: every round asks history
    instance = fake.start("bk")
    handler = Blocked()

    async def scenario(worker: Worker) -> None:
        await until(lambda: bool(handler.running), "the handler runs")
        fake.cancel(instance)
        fake.inject(route, Fault("status", 503), Fault("lose"))
        assert await worker.check_cancelled() == 0
        assert await worker.check_cancelled() == 0
        assert not handler.cancelled
        assert await worker.check_cancelled() == 1  # the engine answers again
        await until(lambda: worker.stats.replies_cancelled == 1, "cancelled")

    run(with_worker(fake, handler.router(), scenario))
    assert handler.cancelled == {instance}


def test_history_that_lags_cancels_nothing() -> None:
    """Neither the runtime nor history shows the instance at the catch event or ended: no
    evidence, no cancel."""
    fake = FakeEngine(transit_polls=10_000)
    instance = fake.start("bk")
    handler = Blocked()

    async def scenario(worker: Worker) -> None:
        await until(lambda: bool(handler.running), "the handler runs")
        fake.history_lags.add(instance)
        assert await worker.check_cancelled() == 0
        fake.cancel(instance)  # ended, but history does not show it yet
        assert await worker.check_cancelled() == 0
        assert not handler.cancelled
        fake.history_lags.clear()
        assert await worker.check_cancelled() == 1

    run(with_worker(fake, handler.router(), scenario))


def test_an_async_continuation_before_the_catch_event_is_not_a_cancel() -> None:
    fake = FakeEngine(transit_polls=3)  # in transit until three early correlations
    instance = fake.start("bk")
    handler = Blocked()

    async def scenario(worker: Worker) -> None:
        await until(lambda: bool(handler.running), "the handler runs")
        assert fake.instances[instance].state == "transit"
        for _ in range(3):
            assert await worker.check_cancelled() == 0
        handler.release.set()
        await worker.drain()

    run(with_worker(fake, handler.router(), scenario))
    assert not handler.cancelled
    assert fake.instances[instance].state == "completed"


def test_a_loop_back_to_the_catch_event_is_not_a_cancel() -> None:
    """Round 2's job: history holds round 1's ended passage of the catch event, and the
    instance is in transit to it again; that passage is not this round's."""
    fake = FakeEngine(transit_polls=2)
    instance = fake.start("bk", rounds=2)
    rounds: list[str] = []
    release = asyncio.Event()
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        rounds.append(task.id)
        if len(rounds) == 2:
            await release.wait()
        return {"round": len(rounds)}

    async def scenario(worker: Worker) -> None:
        await until(lambda: fake.instances[instance].passages == 1, "round 1 delivered")
        second = asyncio.ensure_future(worker.run_once())  # round 2's task; its handler waits
        await until(lambda: len(rounds) == 2, "round 2 runs")
        assert fake.instances[instance].state == "transit"
        assert await worker.check_cancelled() == 0
        release.set()
        await second

    run(with_worker(fake, router, scenario))
    assert fake.instances[instance].passages == 2
    assert fake.instances[instance].state == "completed"


def test_a_handler_that_ignores_the_cancellation_is_abandoned_after_the_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeEngine()
    instance = fake.start("bk")
    stubborn = threading.Event()
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    def handle(task: Task) -> dict[str, object]:
        stubborn.wait(30)  # never looks at task.cancelled
        return {}

    async def scenario(worker: Worker) -> JobState:
        await until(lambda: worker.stats.pending_replies == 1, "the handler runs")
        await asyncio.sleep(0.05)
        fake.cancel(instance)
        with caplog.at_level(logging.WARNING, logger="camunda_relay"):
            assert await worker.check_cancelled() == 1
            await until(lambda: worker.stats.replies_cancelled == 1, "abandoned")
        (job,) = await worker.journal.jobs()
        return job.state

    try:
        assert run(with_worker(fake, router, scenario)) is JobState.CANCELLED
    finally:
        stubborn.set()
    assert any("did not end within CAMUNDA_CANCEL_GRACE" in r.getMessage() for r in caplog.records)
    assert fake.instances[instance].passages == 0


def test_a_sync_handler_reads_task_cancelled_and_its_cleanup_runs() -> None:
    fake = FakeEngine()
    instance = fake.start("bk")
    cleaned: list[str | None] = []
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    def handle(task: Task) -> dict[str, object]:
        assert not task.cancelled.is_set()
        task.cancelled.wait(30)
        cleaned.append(task.cancelled.reason)
        return {"ignored": True}

    async def scenario(worker: Worker) -> None:
        await until(lambda: worker.stats.pending_replies == 1, "the handler runs")
        await asyncio.sleep(0.05)
        fake.cancel(instance)
        assert await worker.check_cancelled() == 1
        await until(lambda: worker.stats.replies_cancelled == 1, "cancelled")

    run(with_worker(fake, router, scenario))
    assert cleaned == ["the process instance was cancelled"]
    assert fake.instances[instance].passages == 0


def test_a_delivery_that_finds_the_instance_cancelled_ends_cancelled_without_an_incident() -> None:
    """The handler returned before any round saw the cancellation: the correlation finds
    nobody waiting, history says EXTERNALLY_TERMINATED (was: failing, an incident nobody could
    carry, then failed)."""
    fake = FakeEngine()
    instance = fake.start("bk")
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        fake.cancel(task.process_instance_id)
        return {"late": True}

    async def scenario(worker: Worker) -> JobState:
        await until(lambda: worker.stats.replies_cancelled == 1, "the delivery gave up")
        (job,) = await worker.journal.jobs()
        return job.state

    state = run(with_worker(fake, router, scenario))
    assert state is JobState.CANCELLED
    assert fake.incidents == []
    assert fake.instances[instance].passages == 0


def _ok() -> Health:
    return Health(True)


def test_a_parked_deferred_job_is_cancelled_and_its_token_answers_410(tmp_path: Path) -> None:
    fake = FakeEngine()
    instance = fake.start("bk")
    path = tmp_path / "journal.sqlite3"
    settings = Settings(**{**vars(SETTINGS), "journal": str(path)})
    tokens: list[str] = []
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def hand_out(task: Task) -> dict[str, object]:
        assert task.reply_token is not None
        tokens.append(task.reply_token)
        raise DeferReply

    async def scenario(worker: Worker) -> None:
        await until(lambda: worker.stats.replies_deferred == 1, "parked")
        await until(lambda: worker.stats.pending_replies == 0, "its runner ended")
        assert await worker.check_cancelled() == 0
        fake.cancel(instance)
        assert await worker.check_cancelled() == 1
        (job,) = await worker.journal.jobs()
        assert job.state is JobState.CANCELLED
        with pytest.raises(ReplyTokenError, match="the process instance was cancelled"):
            await send_reply(worker.journal, tokens[0], {"late": 1})

    run(with_worker(fake, router, scenario, settings))
    routes = reply_routes(Settings(journal=str(path), reply_secret=SECRET))
    server = HttpServer(
        "127.0.0.1", 0, registry=CollectorRegistry(), live=_ok, ready=_ok, routes=routes
    )
    server.start()
    try:
        answer = httpx.post(
            f"http://127.0.0.1:{server.port}/reply",
            json={"token": tokens[0], "variables": {}},
            headers={"authorization": f"Bearer {SECRET}"},
            timeout=30,
        )
    finally:
        server.close()
    assert answer.status_code == 410
    assert "the process instance was cancelled" in answer.json()["error"]
    assert fake.incidents == []


def test_a_plain_handler_is_cancelled_when_extend_lock_answers_404() -> None:
    fake = FakeEngine()
    instance = fake.start("bk")
    seen: list[str] = []
    running = asyncio.Event()
    router = Router()

    @router.task(TOPIC, lock_duration=timedelta(seconds=1))
    async def handle(task: Task) -> dict[str, object]:
        running.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append(task.cancelled.reason or "")
            raise
        return {}

    async def scenario(worker: Worker) -> None:
        await running.wait()
        fake.cancel(instance)
        await until(lambda: worker.stats.tasks_cancelled == 1, "cancelled")

    run(with_worker(fake, router, scenario))
    assert seen == ["the task is gone: its process instance was cancelled, deleted or moved on"]
    assert fake.failures == []
    assert "complete" not in fake.calls


def test_a_stop_still_cancels_a_watched_handler_without_ending_its_job() -> None:
    """A shutdown's cancellation is not an instance's: the job stays to resume."""
    fake = FakeEngine()
    fake.start("bk")
    handler = Blocked()
    settings = Settings(**{**vars(SETTINGS), "shutdown_grace": timedelta(milliseconds=50)})

    async def scenario() -> JobState:
        client = EngineClient(settings, transport=fake.transport())
        worker = Worker(handler.router(), settings, client=client)
        once = asyncio.ensure_future(worker.run_once())
        await until(lambda: bool(handler.running), "the handler runs")
        await worker.shutdown()
        once.cancel()
        await asyncio.gather(once, return_exceptions=True)
        (job,) = await worker.journal.jobs()
        return job.state

    assert run(scenario()) is JobState.ACKNOWLEDGED
    assert handler.cancelled  # cancelled by the stop, as before


def test_pending_shows_cancelled_jobs_and_reply_says_the_instance_was_cancelled(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite3"
    token, digest = new_token()

    async def save() -> None:
        journal = SqliteJournal(path, owner="worker", lease=timedelta(0))
        try:
            job = make_job(1, state=JobState.CANCELLED, token_hash=digest)
            await journal.save(dataclasses.replace(job, error="the process instance was cancelled"))
        finally:
            await journal.close()

    asyncio.run(save())
    env = {"CAMUNDA_JOURNAL": str(path)}
    listed = run_cli("pending", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "(not shown: 1 cancelled;" in listed.stdout
    shown = run_cli("pending", "--state", "cancelled", env=env)
    assert "task-1" in shown.stdout
    assert "the process instance was cancelled" in shown.stdout
    answered = run_cli("reply", token, "--var", "x=1", env=env)
    assert answered.returncode == 1
    assert "the process instance was cancelled" in answered.stderr
    assert token not in answered.stderr + answered.stdout
