"""Who runs a job, as the worker's claim rounds apply it (docs/journal.md): a restart under
the same worker id resumes every job of its own, however many claim batches that takes; a
worker never takes a job taken under other fetch filters than its own; an unreadable row is
given back, marked and named, and the rest of the batch runs. Against the in-process fake
engine on a SQLite journal, with a :class:`~camunda_relay.clock.ManualClock` that moves the
claim rounds (no wait depends on timing)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from camunda_relay import EngineClient, Router, Settings, Task, Worker
from camunda_relay.cli import cli
from camunda_relay.clock import ManualClock
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.job import Job, JobState
from camunda_relay.worker import recovery
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine

LEASE = timedelta(seconds=60)
ROUND = LEASE.total_seconds() / 3  # the claim loop's interval


class Work:
    """A reply handler that records the tasks it ran on and may be held back."""

    def __init__(self, *, blocked: bool = False) -> None:
        self.ran: list[Task] = []
        self.go = asyncio.Event()
        if not blocked:
            self.go.set()

    def router(self, **filters: object) -> Router:
        router = Router()

        @router.task(TOPIC, reply=MESSAGE, **filters)  # type: ignore[arg-type]
        async def handle(task: Task) -> dict[str, object]:
            self.ran.append(task)
            await self.go.wait()
            return {}

        return router


def _worker(
    fake: FakeEngine, path: Path, clock: ManualClock, router: Router, worker_id: str
) -> Worker:
    settings = Settings(
        url="http://fake-engine/engine-rest",
        journal=str(path),
        journal_lease=LEASE,
        reconcile="off",
        max_pending_replies=50,
    )
    client = EngineClient(settings, transport=fake.transport())
    return Worker(router, settings, client=client, clock=clock, worker_id=worker_id)


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _rounds(clock: ManualClock, count: int) -> None:
    """Let ``count`` claim rounds run: the clock moves one interval, and the lease and claim
    loops (and the sweep's) are waiting again before the next."""
    for _ in range(count):
        await _until(lambda: clock.sleepers >= 3, "the worker's loops to wait")
        clock.advance(ROUND)
        await asyncio.sleep(0)
    await _until(lambda: clock.sleepers >= 3, "the worker's loops to wait")


async def _seed(
    fake: FakeEngine, path: Path, owner: str, count: int, *, lease: timedelta, filter_key: str = ""
) -> list[str]:
    """``count`` acknowledged jobs held by ``owner`` (its lease ``lease`` from now), their
    tasks completed in the engine and their instances waiting for the reply."""
    journal = SqliteJournal(path, owner=owner, lease=lease)
    instances = []
    try:
        await journal.renew()
        for number in range(count):
            instance = fake.start(f"bk-{number}")
            fake.complete_elsewhere(instance)
            (task,) = [t for t in fake.tasks.values() if t.instance_id == instance]
            job = Job(
                task=Task(id=task.id, topic=TOPIC, worker_id=owner, process_instance_id=instance),
                message=MESSAGE,
                state=JobState.ACKNOWLEDGED,
                attempts=1,
                created_at=1_760_000_000.0 + number,
                filter_key=filter_key,
            )
            assert await journal.record(job)
            instances.append(instance)
    finally:
        await journal.close()
    return instances


def test_a_restart_under_the_same_id_resumes_every_job_however_many_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Kubernetes container restart keeps the pod name: the jobs the killed process held
    are this worker id's own, under its own live lease. A claim round takes batch after
    batch of those no runner here holds, until every one runs; later rounds start none
    twice."""
    monkeypatch.setattr(recovery, "CLAIM_BATCH", 3)
    fake, path, clock = FakeEngine(), tmp_path / "journal.sqlite3", ManualClock()
    work = Work(blocked=True)

    async def main() -> None:
        instances = await _seed(fake, path, "w1", 7, lease=timedelta(hours=1))
        async with _worker(fake, path, clock, work.router(), "w1") as worker:
            running = asyncio.ensure_future(worker.run())
            await _until(lambda: len(work.ran) == 7, "every job in the first round")
            await _rounds(clock, 2)
            assert len(work.ran) == 7, "a job a runner holds is never started twice"
            work.go.set()
            await _until(
                lambda: all(fake.instances[i].state == "completed" for i in instances), "replies"
            )
            worker.stop()
            await running

    asyncio.run(asyncio.wait_for(main(), timeout=120))


def test_a_worker_never_takes_jobs_taken_under_other_fetch_filters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two tenant pods on one journal, one topic: pod A died (no lease). Pod B, registered
    for tenant b, never runs A's jobs, and names them at start; an A pod back under a new
    id takes every one."""
    fake, path, clock = FakeEngine(), tmp_path / "journal.sqlite3", ManualClock()
    tenant_a, tenant_b = Work(), Work()
    key_a = tenant_a.router(tenant_ids=["a"])[TOPIC].filter_key
    assert key_a
    assert key_a != tenant_b.router(tenant_ids=["b"])[TOPIC].filter_key

    async def main() -> None:
        instances = await _seed(fake, path, "pod-a", 4, lease=-LEASE, filter_key=key_a)
        async with _worker(fake, path, clock, tenant_b.router(tenant_ids=["b"]), "pod-b") as b:
            running = asyncio.ensure_future(b.run())
            await _rounds(clock, 3)
            assert tenant_b.ran == [], "B ran a job of tenant a"
            b.stop()
            await running
        async with _worker(fake, path, clock, tenant_a.router(tenant_ids=["a"]), "pod-a2") as a:
            running = asyncio.ensure_future(a.run())
            await _until(
                lambda: all(fake.instances[i].state == "completed" for i in instances), "replies"
            )
            a.stop()
            await running
        assert len(tenant_a.ran) == 4

    with caplog.at_level(logging.WARNING, logger="camunda_relay"):
        asyncio.run(asyncio.wait_for(main(), timeout=120))
    named = [r.getMessage() for r in caplog.records if "other fetch filters" in r.getMessage()]
    assert len(named) == 1, named
    assert "4 unfinished jobs of topic 'messageSending'" in named[0]


def test_an_unreadable_row_is_given_back_marked_and_named_and_the_rest_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake, path, clock = FakeEngine(), tmp_path / "journal.sqlite3", ManualClock()
    work = Work()

    async def main() -> tuple[list[str], str]:
        instances = await _seed(fake, path, "dead", 5, lease=-LEASE)
        bad = next(t.id for t in fake.tasks.values() if t.instance_id == instances[2])
        with sqlite3.connect(path) as conn:  # a payload of another version
            conn.execute("UPDATE relay_jobs SET payload = '{\"v\": 99}' WHERE id = ?", (bad,))
        conn.close()
        async with _worker(fake, path, clock, work.router(), "heir") as worker:
            running = asyncio.ensure_future(worker.run())
            others = [i for n, i in enumerate(instances) if n != 2]
            await _until(
                lambda: all(fake.instances[i].state == "completed" for i in others), "the rest"
            )
            await _rounds(clock, 3)
            unreadable = await worker.journal.unreadable()
            worker.stop()
            await running
        assert [job.id for job in unreadable] == [bad]
        assert unreadable[0].state == "acknowledged"
        return [r.getMessage() for r in caplog.records if bad in r.getMessage()], bad

    with caplog.at_level(logging.INFO, logger="camunda_relay"):
        lines, bad = asyncio.run(asyncio.wait_for(main(), timeout=120))
    assert len(lines) == 1, lines  # once, not at every round
    assert "cannot be read" in lines[0]
    assert "payload version 99" in lines[0]
    with sqlite3.connect(path) as conn:
        owner = conn.execute("SELECT owner FROM relay_jobs WHERE id = ?", (bad,)).fetchone()
    conn.close()
    assert owner == ("",), "given back: held by nobody"
    listed = CliRunner().invoke(cli, ["pending", "--journal", str(path)])
    assert listed.exit_code == 0, listed.output
    assert "cannot be read" in listed.output
    assert bad in listed.output
    as_json = CliRunner().invoke(cli, ["pending", "--journal", str(path), "--json"])
    assert any(record.get("id") == bad for record in json.loads(as_json.output))
    cancelled = CliRunner().invoke(cli, ["pending", "cancel", bad, "--yes", "--journal", str(path)])
    assert cancelled.exit_code == 0, cancelled.output
    assert (
        "cannot be read" not in CliRunner().invoke(cli, ["pending", "--journal", str(path)]).output
    )
