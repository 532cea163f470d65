"""An accepted answer is a promise: a deferred reply's answer that came while its attempt ran
is delivered (or, a failure, raised as an incident), whatever became of the attempt (it
raised, returned, or its worker stopped or died), and parking a deferred job is one write.

Against the in-process fake engine (what is tested is the worker and its journal), with the
memory and SQLite journals: the answer is given from "elsewhere" (another journal object on
the same store, as ``camunda-relay reply`` or ``POST /reply`` would) while the handler runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from camunda_relay import EngineClient, Router, Settings, Task, Worker
from camunda_relay.errors import JournalUnavailable
from camunda_relay.journal import Journal, MemoryJournal
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.job import Job, JobState
from camunda_relay.replies.tokens import fail_reply, send_reply
from camunda_relay.task import DeferReply
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine

ANSWER = {"answer": "from the token's holder"}


class Journals:
    """Journals for several owners on one store (a shared memory journal or one file)."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self._path = path / "journal.sqlite3"
        self._memory = MemoryJournal(owner="nobody")
        self._opened: list[Journal] = []

    def open(self, owner: str) -> Journal:
        journal: Journal = (
            self._memory.share(owner=owner)
            if self.kind == "memory"
            else SqliteJournal(self._path, owner=owner)
        )
        self._opened.append(journal)
        return journal

    async def close(self) -> None:
        for journal in self._opened:
            await journal.close()


@pytest.fixture(params=["memory", "sqlite"])
def journals(request: pytest.FixtureRequest, tmp_path: Path) -> Journals:
    return Journals(request.param, tmp_path)


def _settings() -> Settings:
    return Settings(
        url="http://fake-engine/engine-rest",
        journal=":memory:",
        retries=3,
        retry_timeout=timedelta(milliseconds=10),
        reconcile_interval=timedelta(hours=1),
        shutdown_grace=timedelta(0),
    )


def _worker(fake: FakeEngine, router: Router, journal: Journal) -> Worker:
    settings = _settings()
    client = EngineClient(settings, transport=fake.transport())
    return Worker(router, settings, client=client, journal=journal, worker_id=journal.owner)


Handler = Callable[[Task, int], Awaitable[dict[str, object]]]


def _router(handler: Handler) -> tuple[Router, list[int]]:
    """A reply topic whose handler is ``handler(task, attempt)``; the list counts calls."""
    router = Router()
    calls: list[int] = []

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        calls.append(1)
        return await handler(task, len(calls))

    return router, calls


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def _delivered_with(fake: FakeEngine, instance_id: str) -> dict[str, object]:
    instance = fake.instances[instance_id]
    assert instance.passages == 1, f"not delivered ({instance.state})"
    return {name: value["value"] for name, value in instance.variables.items()}


def run(journals: Journals, scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        try:
            await asyncio.wait_for(scenario(), timeout=60)
        finally:
            await journals.close()

    asyncio.run(main())


# -- the attempt raises, returns, or is stopped after its token was answered --------------------


@pytest.mark.parametrize("failure", [False, True], ids=["reply", "failure"])
def test_an_answer_before_the_attempt_raises_is_taken(journals: Journals, failure: bool) -> None:
    fake = FakeEngine()
    instance_id = fake.start("bk")
    web = journals.open("web")

    async def handler(task: Task, attempt: int) -> dict[str, object]:
        assert task.reply_token is not None
        if attempt == 1:
            if failure:
                await fail_reply(web, task.reply_token, "card declined")
            else:
                await send_reply(web, task.reply_token, ANSWER)
            raise RuntimeError("the attempt fails after its token was answered")
        raise DeferReply

    router, calls = _router(handler)

    async def scenario() -> None:
        async with _worker(fake, router, journals.open("w1")) as worker:
            await worker.run_once()
            await worker.resume()
            await worker.drain()

    run(journals, scenario)
    assert calls == [1], "no attempt after the answer"
    if failure:
        assert fake.instances[instance_id].passages == 0
        (incident,) = fake.incidents
        assert "card declined" in str(incident)
    else:
        assert _delivered_with(fake, instance_id) == ANSWER
        assert fake.incidents == []


def test_an_answer_wins_over_the_attempts_own_result(journals: Journals) -> None:
    """The holder was told "accepted": its answer is what gets delivered."""
    fake = FakeEngine()
    instance_id = fake.start("bk")
    web = journals.open("web")

    async def handler(task: Task, attempt: int) -> dict[str, object]:
        assert task.reply_token is not None
        await send_reply(web, task.reply_token, ANSWER)
        return {"answer": "the handler's own"}

    router, calls = _router(handler)

    async def scenario() -> None:
        async with _worker(fake, router, journals.open("w1")) as worker:
            await worker.run_once()

    run(journals, scenario)
    assert calls == [1]
    assert _delivered_with(fake, instance_id) == ANSWER


@pytest.mark.parametrize("how", ["stopped", "killed"])
@pytest.mark.parametrize("heir", ["same id", "new id"])
def test_an_answer_outlives_a_worker_stopped_mid_attempt(
    journals: Journals, how: str, heir: str
) -> None:
    fake = FakeEngine()
    instance_id = fake.start("bk")
    web = journals.open("web")
    answered = asyncio.Event()

    async def handler(task: Task, attempt: int) -> dict[str, object]:
        assert task.reply_token is not None
        if attempt == 1:
            await send_reply(web, task.reply_token, ANSWER)
            answered.set()
            await asyncio.Event().wait()  # the long work: the worker stops meanwhile
        raise DeferReply

    router, calls = _router(handler)

    async def scenario() -> None:
        worker = _worker(fake, router, journals.open("w1"))
        async with worker:
            running = asyncio.ensure_future(worker.run())
            await _until(answered.is_set, "the answer")
            if how == "killed":  # every task cancelled where it stands; nothing released
                doomed = [running, *worker._ctx.runs.tasks()]
                for task in doomed:
                    task.cancel()
                await asyncio.wait(doomed)
            else:
                worker.stop()
                await running
        owner = "w1" if heir == "same id" else "w2"
        journal = journals.open(owner)
        if how == "killed" and owner != "w1":
            await _expire(journal, "w1")
        async with _worker(fake, router, journal) as restarted:
            await restarted.resume()
            await restarted.drain()

    run(journals, scenario)
    assert calls == [1], "no attempt after the answer"
    assert _delivered_with(fake, instance_id) == ANSWER
    assert fake.incidents == []


async def _expire(journal: Journal, owner: str) -> None:
    """Let ``owner``'s lease run out (a dead worker's), as the lease's end would."""
    if isinstance(journal, MemoryJournal):
        journal._leases[owner] = 0.0
    else:
        assert isinstance(journal, SqliteJournal)
        await journal._write(
            lambda conn: conn.execute(
                "UPDATE relay_owners SET lease_until = 0 WHERE owner = ?", (owner,)
            )
        )


# -- parking is one write ----------------------------------------------------------------------


class _FailingOnce:
    """A journal whose first call of ``method`` fails (the database did not answer)."""

    def __init__(self, inner: Journal, method: str) -> None:
        self._inner = inner
        self._method = method
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name != self._method or self.failed:
            return attribute

        async def fail(*args: object, **kwargs: object) -> object:
            self.failed = True
            raise JournalUnavailable(f"{name} failed (injected)")

        return fail


@pytest.mark.parametrize("method", ["release", "park", "save", "get"])
def test_a_journal_write_failing_while_parking_leaves_nothing_held(
    journals: Journals, method: str
) -> None:
    """Whichever journal call fails while the job is parked, it ends held by nobody, so a
    peer delivers the answer that comes later."""
    fake = FakeEngine()
    instance_id = fake.start("bk")
    web = journals.open("web")
    tokens: list[str] = []

    async def handler(task: Task, attempt: int) -> dict[str, object]:
        assert task.reply_token is not None
        tokens.append(task.reply_token)
        raise DeferReply

    router, calls = _router(handler)

    async def scenario() -> None:
        journal = journals.open("w1")
        failing = _FailingOnce(journal, method)
        async with _worker(fake, router, failing) as worker:  # type: ignore[arg-type]
            await worker.run_once()
            await send_reply(web, tokens[-1], ANSWER)
            jobs: list[Job] = await journal.jobs()
            assert [job.state for job in jobs] == [JobState.DEFERRED]
            peer = journals.open("peer")
            async with _worker(fake, router, peer) as other:
                await other._recovery.resume()  # a peer's claim round (not its own jobs)
                await other.drain()

    run(journals, scenario)
    assert calls == [1]
    assert _delivered_with(fake, instance_id) == ANSWER
