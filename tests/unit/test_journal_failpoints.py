"""A journal write that fails, each in turn: the journal's failpoints
(``journal_<write>``: nothing written; ``journal_<write>_lost``: written, the answer lost)
leave no state half-made, and the next round heals it. A deferred reply, answered after it
was parked or while its handler ran, is delivered once with its answer; no incident.

Against the in-process fake engine with the memory and SQLite journals (what is tested is
the worker's handling of its journal's failures). Each round is a worker (re)started under
the same id: its first claim takes its own jobs, its later ones only those nobody holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path

import pytest

from camunda_relay import EngineClient, Router, Settings, Task, Worker
from camunda_relay.backoff import Backoff
from camunda_relay.errors import ConfigurationError, InvalidInput, JournalUnavailable
from camunda_relay.failpoints import JOURNAL_NAMES, Failpoints
from camunda_relay.journal import Journal, MemoryJournal
from camunda_relay.journal.failing import FailpointJournal, unwrapped
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.job import JobState
from camunda_relay.replies.tokens import send_reply
from camunda_relay.task import DeferReply
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine
from tests.support.journals import make_job

ANSWER = {"answer": "kept"}
ROUNDS = 12
# The writes a deferred reply meets, from its fetch to its delivery, and the worker's own.
WRITES = [
    "record",
    "save_acknowledged",
    "park",
    "claim",
    "save_done",
    "save_delivered",
    "renew",
    "release_lease",
]
POINTS = [f"journal_{write}{after}" for write in WRITES for after in ("", "_lost")]


class _Store:
    """Journals on one store: a shared memory journal, or one SQLite file (a worker closes
    its journal when it stops, so each round opens one)."""

    def __init__(self, kind: str, path: Path) -> None:
        self._kind = kind
        self._path = path / "journal.sqlite3"
        self._memory = MemoryJournal(owner="nobody")

    def open(self, owner: str) -> Journal:
        if self._kind == "memory":
            return self._memory.share(owner=owner)
        return SqliteJournal(self._path, owner=owner)


def _worker(fake: FakeEngine, router: Router, journal: Journal, points: Failpoints) -> Worker:
    settings = Settings(
        url="http://fake-engine/engine-rest",
        journal=":memory:",
        reconcile_interval=timedelta(hours=1),
        shutdown_grace=timedelta(0),
    )
    return Worker(
        router,
        settings,
        client=EngineClient(settings, transport=fake.transport()),
        journal=journal,
        worker_id=journal.owner,
        failpoints=points,
        poll_backoff=Backoff(base=timedelta(milliseconds=5), cap=timedelta(milliseconds=20)),
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("when", ["parked", "running"])
@pytest.mark.parametrize("point", POINTS)
def test_one_failed_journal_write_heals(tmp_path: Path, kind: str, when: str, point: str) -> None:
    """``when``: the token is answered after the job was parked, or while its handler ran."""
    fake = FakeEngine()
    instance_id = fake.start("bk")
    store = _Store(kind, tmp_path)
    web = store.open("web")
    tokens: list[str] = []
    answered: set[str] = set()
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        assert task.reply_token is not None
        tokens.append(task.reply_token)
        if when == "running":
            await send_reply(web, task.reply_token, ANSWER)
            answered.add(task.reply_token)
        raise DeferReply

    points = Failpoints(journal=True)
    points.once(point)

    async def scenario() -> None:
        for _ in range(ROUNDS):
            if fake.instances[instance_id].passages:
                break
            async with _worker(fake, router, store.open("w1"), points) as worker:
                # The journal failed at start: this round fetches no reply topic.
                with contextlib.suppress(InvalidInput):
                    await worker.run_once()
                for token in tokens[-1:]:
                    if token not in answered:
                        await send_reply(web, token, ANSWER)
                        answered.add(token)
                await worker._recovery.renew()
                await worker._recovery.resume()  # the periodic round: not its own jobs
                await worker.drain()
        await web.close()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert points.fired == [point], "the write failed once"
    instance = fake.instances[instance_id]
    assert instance.passages == 1, f"not delivered ({instance.state})"
    assert {name: value["value"] for name, value in instance.variables.items()} == ANSWER
    assert fake.incidents == []
    assert len(set(tokens)) == len(tokens)


def test_a_failed_write_writes_nothing_and_a_lost_one_writes() -> None:
    async def scenario() -> None:
        inner = MemoryJournal(owner="w")
        points = Failpoints(journal=True)
        journal = FailpointJournal(inner, points)
        assert unwrapped(journal) is inner
        points.once("journal_record")
        with pytest.raises(JournalUnavailable, match="journal_record"):
            await journal.record(make_job(1))
        assert await inner.get("task-1") is None
        points.once("journal_save_acknowledged_lost")
        with pytest.raises(JournalUnavailable):
            await journal.save(make_job(1, state=JobState.ACKNOWLEDGED))
        stored = await inner.get("task-1")
        assert stored is not None
        assert stored.state is JobState.ACKNOWLEDGED
        assert points.fired == ["journal_record", "journal_save_acknowledged_lost"]

    asyncio.run(scenario())


def test_a_failpoint_fires_at_most_its_times() -> None:
    async def scenario() -> None:
        points = Failpoints.from_environment(
            {"CAMUNDA_RELAY_FAILPOINTS": "journal_park=fail:1:x2,journal_claim=fail:x1"}
        )
        for _ in range(2):
            with pytest.raises(JournalUnavailable):
                await points.hit("journal_park")
        await points.hit("journal_park")
        with pytest.raises(JournalUnavailable):
            await points.hit("journal_claim")
        await points.hit("journal_claim")
        assert points.fired == ["journal_park", "journal_park", "journal_claim"]

    asyncio.run(scenario())


def test_journal_failpoints_are_read_from_the_environment() -> None:
    points = Failpoints.from_environment({"CAMUNDA_RELAY_FAILPOINTS": "journal_park=fail:0.5"})
    assert points.journal_active
    assert not Failpoints.from_environment({}).journal_active
    assert {"journal_park", "journal_park_lost", "journal_save_done"} <= JOURNAL_NAMES
    with pytest.raises(ConfigurationError, match="unknown failpoint"):
        Failpoints.from_environment({"CAMUNDA_RELAY_FAILPOINTS": "journal_parking=fail"})
    with pytest.raises(ConfigurationError, match="journal's points only"):
        Failpoints.from_environment({"CAMUNDA_RELAY_FAILPOINTS": "mid_work=fail"})


def test_claimed_rows_whose_answer_was_lost_run_after_the_next_claim_round() -> None:
    """``journal_claim_lost``: the rows are this live worker's, nothing runs them; the next
    periodic round (same process, no restart) must take them."""
    fake = FakeEngine()
    instance_id = fake.start("bk")
    shared = MemoryJournal(owner="nobody")
    web = shared.share(owner="web")
    tokens: list[str] = []
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        assert task.reply_token is not None
        tokens.append(task.reply_token)
        raise DeferReply

    points = Failpoints(journal=True)

    async def scenario() -> None:
        async with _worker(fake, router, shared.share(owner="w1"), points) as worker:
            await worker.run_once()
            await send_reply(web, tokens[-1], ANSWER)
            points.once("journal_claim_lost")
            await worker._recovery.resume()
            await worker._recovery.resume()
            await worker.drain()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert points.fired == ["journal_claim_lost"]
    assert fake.instances[instance_id].passages == 1
