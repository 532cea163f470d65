"""The worker and its journal at start and in its sweep: a journal that cannot be used stops
the worker with one error, an empty one is swept for orphans at once, and finished jobs are
pruned after the retention. Against the in-process fake engine (the journal is what is
tested) on a :class:`~camunda_relay.clock.ManualClock`, so no wait depends on timing."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from camunda_relay import (
    ConfigurationError,
    EngineClient,
    JournalError,
    Router,
    Settings,
    Task,
    Worker,
)
from camunda_relay.clock import ManualClock
from camunda_relay.journal import sqlite_connection
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.job import JobState
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine
from tests.support.journals import make_job


def _router() -> Router:
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        return {}

    return router


def _worker(fake: FakeEngine, journal: Path, clock: ManualClock, **changes: object) -> Worker:
    settings = Settings(
        url="http://fake-engine/engine-rest",
        journal=str(journal),
        reconcile_interval=timedelta(hours=1),
        reconcile_min_age=timedelta(minutes=5),
        **changes,  # type: ignore[arg-type]
    )
    client = EngineClient(settings, transport=fake.transport())
    return Worker(_router(), settings, client=client, clock=clock)


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Let the worker run (real time) until ``condition``; the clock itself never moves."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_a_damaged_journal_stops_the_worker_with_one_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"not a journal\n" * 300)

    async def main() -> None:
        async with _worker(FakeEngine(), path, ManualClock()) as worker:
            await worker.run()

    with (
        caplog.at_level(logging.WARNING, logger="camunda_relay"),
        pytest.raises(JournalError, match="damaged or not a journal") as raised,
    ):
        asyncio.run(asyncio.wait_for(main(), timeout=60))
    assert "\n" not in str(raised.value)
    assert not caplog.records, "the error is said once, by whoever runs the worker"


def test_an_empty_journal_is_swept_for_orphans_at_once(tmp_path: Path) -> None:
    fake = FakeEngine()
    orphan = fake.start("lost")
    fake.complete_elsewhere(orphan, waiting_for=timedelta(hours=1))
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"")  # the journal that knew of it was lost

    async def main() -> None:
        async with _worker(fake, path, ManualClock()) as worker:
            running = asyncio.ensure_future(worker.run())
            reconciler = worker.reconciler
            assert reconciler is not None
            await _until(lambda: reconciler.orphans.collect()[0].samples[0].value == 1, "sweep")
            worker.stop()
            await running

    asyncio.run(asyncio.wait_for(main(), timeout=60))


def test_a_journal_with_jobs_waits_for_the_first_sweep(tmp_path: Path) -> None:
    fake = FakeEngine()
    orphan = fake.start("lost")
    fake.complete_elsewhere(orphan, waiting_for=timedelta(hours=1))
    path = tmp_path / "journal.sqlite3"
    clock = ManualClock()

    async def main() -> None:
        seed = SqliteJournal(path, owner="earlier")
        await seed.record(make_job(1, state=JobState.DELIVERED))
        await seed.close()
        async with _worker(fake, path, clock) as worker:
            running = asyncio.ensure_future(worker.run())
            await _until(lambda: clock.sleepers >= 3, "the worker's loops to wait")
            assert "GET /event-subscription" not in fake.calls
            worker.stop()
            await running

    asyncio.run(asyncio.wait_for(main(), timeout=60))


def test_finished_jobs_past_the_retention_are_pruned(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    clock = ManualClock(wall=1_760_000_000.0 + 8 * 86400)  # 8 days after make_job's jobs

    async def main() -> list[str]:
        seed = SqliteJournal(path, owner="earlier")
        await seed.record(make_job(1, state=JobState.DELIVERED))
        await seed.record(make_job(2, state=JobState.ACKNOWLEDGED, topic="other"))
        recent = make_job(3, state=JobState.FAILED)
        await seed.record(dataclasses.replace(recent, updated_at=clock.wall() - 86400))
        await seed.close()
        async with _worker(FakeEngine(), path, clock) as worker:
            running = asyncio.ensure_future(worker.run())
            journal = worker.journal
            await _until(lambda: clock.sleepers >= 3, "the worker's loops to wait")
            clock.advance(30)  # the first sweep
            remaining: list[str] = []

            async def pruned() -> bool:
                remaining[:] = sorted(job.id for job in await journal.jobs())
                return len(remaining) == 2

            deadline = time.monotonic() + 30
            while not await pruned():
                assert time.monotonic() < deadline, remaining
                await asyncio.sleep(0.01)
            worker.stop()
            await running
            return remaining

    assert asyncio.run(asyncio.wait_for(main(), timeout=60)) == ["task-2", "task-3"]


def test_a_worker_id_longer_than_the_engines_column_is_refused() -> None:
    settings = Settings(url="http://fake-engine/engine-rest", journal=":memory:")
    with pytest.raises(ConfigurationError, match="256 characters; the engine keeps at most 255"):
        Worker(_router(), settings, worker_id="w" * 256)


class _Commits:
    """The commits of a SQLite journal's connection, read from the statements it runs: for
    each, whether ``synchronous`` was FULL (an fsync) and the statements it held."""

    def __init__(self) -> None:
        self.synced: list[list[str]] = []
        self.unsynced: list[list[str]] = []
        self._full = True  # the journal opens its connection with synchronous = FULL
        self._statements: list[str] = []

    def trace(self, statement: str) -> None:
        text = " ".join(statement.split()).upper()
        if text.startswith("PRAGMA SYNCHRONOUS"):
            self._full = text.endswith("FULL")
        elif text.startswith("BEGIN"):
            self._statements = []
        elif text == "COMMIT":
            (self.synced if self._full else self.unsynced).append(self._statements)
        else:
            self._statements.append(statement)

    def synced_touching(self, job_id: str) -> int:
        return sum(any(job_id in statement for statement in group) for group in self.synced)


def test_a_reply_jobs_happy_path_costs_at_most_two_fsyncd_journal_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = _Commits()
    connect = sqlite_connection.connect

    def traced(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)  # type: ignore[arg-type]
        conn.set_trace_callback(commits.trace)
        return conn

    monkeypatch.setattr(sqlite_connection, "connect", traced)
    fake = FakeEngine()
    instance_id = fake.start("bk-1")
    path = tmp_path / "journal.sqlite3"
    job_ids: list[str] = []

    async def main() -> JobState:
        async with _worker(fake, path, ManualClock()) as worker:
            await worker.run_once()
            (job,) = await worker.journal.jobs()
            job_ids.append(job.id)
            return job.state

    assert asyncio.run(asyncio.wait_for(main(), timeout=60)) is JobState.DELIVERED
    assert fake.instances[instance_id].passages == 1
    (job_id,) = job_ids
    # The record (before the task is completed) and "done" (the result, before it is sent);
    # the acknowledgement and "delivered" are committed without an fsync of their own.
    assert commits.synced_touching(job_id) <= 2
