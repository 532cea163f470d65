"""One contract for every journal: memory, SQLite and PostgreSQL behave alike.

Each contract test runs against the three stores. A :class:`~tests.support.journals.Store`
opens journals for several owners on one shared store (one MemoryJournal shared with
:meth:`MemoryJournal.share`, one SQLite file, one PostgreSQL table), as several worker
processes would see it. Leases are made expired or live by the lease a journal is opened
with (a negative lease has run out when it is given), never by sleeping; the memory and
SQLite journals also run the lease tests on a :class:`~camunda_relay.clock.ManualClock`.
What only one store promises is tested in test_journal_sqlite.py and test_journal_postgres.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from camunda_relay.clock import ManualClock
from camunda_relay.errors import VariableError
from camunda_relay.journal import Journal, MemoryJournal
from camunda_relay.journal.postgres import PostgresJournal
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.job import JobState
from camunda_relay.variables import Unreadable
from tests.support.journals import (
    EXPIRED,
    LIVE,
    TOPICS,
    Store,
    fresh_database,
    ids,
    make_job,
    rich_job,
    unique_table,
)
from tests.support.postgres import PostgresServer

STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:
    """A fresh database for this module; every test gets a table of its own in it."""
    return fresh_database(postgres_server, "journal_contract")


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    kind: str = request.param
    make: Callable[[str, timedelta], Journal]
    if kind == "memory":
        shared = MemoryJournal(owner="nobody")

        def make(owner: str, lease: timedelta) -> Journal:
            return shared.share(owner=owner, lease=lease)

        def drop(owner: str) -> None:
            shared._leases.pop(owner, None)

    elif kind == "sqlite":
        path = tmp_path / "journal.sqlite3"

        def make(owner: str, lease: timedelta) -> Journal:
            return SqliteJournal(path, owner=owner, lease=lease)

        def drop(owner: str) -> None:
            with sqlite3.connect(path) as conn:
                conn.execute("DELETE FROM relay_owners WHERE owner = ?", (owner,))
            conn.close()

        def corrupt(job_id: str) -> None:
            with sqlite3.connect(path) as conn:
                conn.execute(
                    "UPDATE relay_jobs SET payload = '{\"v\": 99}' WHERE id = ?", (job_id,)
                )
            conn.close()

    else:
        dsn: str = request.getfixturevalue("pg_dsn")
        table = unique_table()

        def make(owner: str, lease: timedelta) -> Journal:
            return PostgresJournal(dsn, owner=owner, lease=lease, table=table)

        def drop(owner: str) -> None:
            owners = sql.Identifier(f"{table}_owners")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DELETE FROM {} WHERE owner = %s").format(owners), (owner,))

        def corrupt(job_id: str) -> None:
            query = sql.SQL("UPDATE {} SET payload = '{{\"v\": 99}}' WHERE id = %s")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(query.format(sql.Identifier(table)), (job_id,))

    return Store(kind, make, drop, corrupt if kind != "memory" else None)


# -- record, save, get -----------------------------------------------------------------------


def test_record_stores_a_new_job_once(store: Store) -> None:
    async def scenario() -> None:
        journal = store.journal()
        first = make_job(1)
        assert await journal.record(first) is True
        again = make_job(1, state=JobState.ACKNOWLEDGED, attempts=3)
        assert await journal.record(again) is False
        assert await journal.get(first.id) == first
        assert await store.journal("worker-b").record(again) is False
        assert await journal.get(first.id) == first

    store.run(scenario)


def test_get_of_an_unknown_job_is_none(store: Store) -> None:
    async def scenario() -> None:
        assert await store.journal().get("no-such-job") is None

    store.run(scenario)


def test_a_job_reads_back_equal_with_every_kind_of_variable(store: Store) -> None:
    job = rich_job()

    async def scenario() -> None:
        await store.journal().save(job)
        read = await store.journal("worker-b").get(job.id)
        assert read == job
        assert read is not None
        assert read.task.variables["java"] == Unreadable(
            "Object", "application/x-java-serialized-object"
        )
        assert read.task.variables["blob"] == bytes(range(256))
        assert read.result is not None
        assert read.result["when"] == datetime(2026, 11, 27, 22, 0, 0, 500000, tzinfo=UTC)

    store.run(scenario)


def test_save_updates_a_recorded_job(store: Store) -> None:
    async def scenario() -> None:
        journal = store.journal()
        job = make_job(1)
        await journal.record(job)
        job = job.advance(JobState.ACKNOWLEDGED, attempts=1)
        await journal.save(job)
        assert await journal.get(job.id) == job
        job = job.advance(JobState.DONE, result={"answer": 42})
        await journal.save(job)
        assert await store.journal("worker-b").get(job.id) == job

    store.run(scenario)


def test_save_stores_an_unknown_job(store: Store) -> None:
    async def scenario() -> None:
        journal = store.journal()
        job = make_job(1, state=JobState.ACKNOWLEDGED)
        await journal.save(job)
        assert await journal.get(job.id) == job
        assert await journal.record(job) is False

    store.run(scenario)


def test_an_unsynced_save_is_read_at_once_and_keeps_the_lease_rules(store: Store) -> None:
    async def scenario() -> None:
        journal = store.journal()
        await journal.renew()
        job = make_job(1)
        await journal.record(job)
        job = job.advance(JobState.ACKNOWLEDGED, attempts=1, token_hash="h1")
        assert await journal.save(job, synced=False) is True
        assert await store.journal("worker-b").get(job.id) == job
        assert await journal.answer("h1", '{"variables": {}}') == "accepted"
        taken = await journal.get(job.id)  # the runner takes the answer
        assert taken is not None
        assert taken.answer is not None
        done = taken.advance(JobState.DONE, result={"answer": 42})
        assert await store.journal("worker-b").save(done, synced=False) is False, "a live lease"
        assert await journal.save(done, synced=False) is True
        unknown = make_job(2, state=JobState.ACKNOWLEDGED)
        assert await journal.save(unknown, synced=False) is True
        assert ids(await store.journal("worker-c").unfinished()) == ["task-1", "task-2"]

    store.run(scenario)


def test_a_result_that_cannot_be_sent_is_refused_by_durable_stores(store: Store) -> None:
    if store.kind == "memory":
        pytest.skip("the memory journal keeps Python objects and encodes nothing")

    async def scenario() -> None:
        journal = store.journal()
        job = make_job(1, state=JobState.DONE, result={"secret": {1, 2}})
        with pytest.raises(VariableError, match="'secret'") as raised:
            await journal.save(job)
        assert "{1, 2}" not in str(raised.value)
        assert await journal.get(job.id) is None

    store.run(scenario)


# -- listing, counting, deleting -------------------------------------------------------------


def test_unfinished_lists_open_jobs_oldest_first(store: Store) -> None:
    async def scenario() -> None:
        journal = store.journal()
        other = store.journal("worker-b", lease=EXPIRED)
        for number, state in [
            (5, JobState.DONE),
            (2, JobState.DELIVERED),
            (1, JobState.ACKNOWLEDGED),
            (4, JobState.FAILED),
            (3, JobState.RECORDED),
            (6, JobState.DROPPED),
        ]:
            await journal.record(make_job(number, state=state))
        await other.record(make_job(0))
        assert ids(await journal.unfinished()) == ["task-0", "task-1", "task-3", "task-5"]
        await journal.save(make_job(1, state=JobState.DELIVERED))
        assert ids(await other.unfinished()) == ["task-0", "task-3", "task-5"]

    store.run(scenario)


def test_unfinished_instances_names_the_open_jobs_instances(store: Store) -> None:
    async def scenario() -> None:
        journal = store.journal()
        other = store.journal("worker-b", lease=EXPIRED)
        assert await journal.unfinished_instances() == set()
        for number, state in [(1, JobState.DONE), (2, JobState.DELIVERED), (3, JobState.FAILING)]:
            await journal.record(make_job(number, state=state))
        await other.record(make_job(4, state=JobState.DEFERRED))
        assert await journal.unfinished_instances() == {"instance-1", "instance-3", "instance-4"}
        await journal.save(make_job(3, state=JobState.FAILED))
        assert await other.unfinished_instances() == {"instance-1", "instance-4"}

    store.run(scenario)


def test_jobs_lists_every_state_oldest_first_and_filters(store: Store) -> None:
    async def scenario() -> None:
        journal = store.journal()
        await journal.record(make_job(3, state=JobState.DELIVERED))
        await journal.record(make_job(1, state=JobState.FAILED, error="deadline"))
        await journal.record(make_job(2, state=JobState.ACKNOWLEDGED))
        await store.journal("other").record(make_job(4))
        assert ids(await journal.jobs()) == ["task-1", "task-2", "task-3", "task-4"]
        finished = await journal.jobs(states=[JobState.FAILED, JobState.DELIVERED])
        assert ids(finished) == ["task-1", "task-3"]
        assert finished[0] == make_job(1, state=JobState.FAILED, error="deadline")
        assert await journal.jobs(states=[]) == []

    store.run(scenario)


def test_counts_name_every_state(store: Store) -> None:
    async def scenario() -> None:
        journal = store.journal()
        assert await journal.counts() == dict.fromkeys(JobState, 0)
        states = [JobState.RECORDED, JobState.DONE, JobState.DONE, JobState.FAILED]
        for number, state in enumerate(states):
            await journal.record(make_job(number, state=state))
        expected = dict.fromkeys(JobState, 0)
        expected.update({JobState.RECORDED: 1, JobState.DONE: 2, JobState.FAILED: 1})
        assert await journal.counts() == expected

    store.run(scenario)


def test_delete_forgets_a_job(store: Store) -> None:
    async def scenario() -> None:
        journal = store.journal()
        await journal.record(make_job(1))
        await journal.record(make_job(2))
        assert await journal.delete("task-1") is True
        assert await journal.delete("task-1") is False
        assert await journal.get("task-1") is None
        assert ids(await journal.unfinished()) == ["task-2"]
        assert await journal.record(make_job(1)) is True

    store.run(scenario)


def test_prune_deletes_only_finished_jobs_older_than_the_cutoff(store: Store) -> None:
    # make_job(n) is stamped 1_760_000_000 + n seconds: jobs 0-3 are older than the cutoff.
    cutoff = 1_760_000_003.5

    async def scenario() -> None:
        journal = store.journal()
        await journal.record(make_job(1, state=JobState.DELIVERED))
        await journal.record(make_job(2, state=JobState.FAILED))
        await journal.record(make_job(3, state=JobState.DONE))  # old, but not finished
        await journal.record(make_job(4, state=JobState.DROPPED))  # finished, but recent
        await store.journal("worker-b").record(make_job(0, state=JobState.DROPPED))
        assert await journal.prune(finished_before=cutoff) == 3
        assert ids(await journal.jobs()) == ["task-3", "task-4"]
        assert await journal.prune(finished_before=cutoff) == 0
        counts = await journal.counts()
        assert counts[JobState.DONE] == 1
        assert counts[JobState.DROPPED] == 1

    store.run(scenario)


def test_close_can_be_called_twice(store: Store) -> None:
    async def scenario() -> None:
        journal = store.journal()
        await journal.record(make_job(1))
        await journal.close()
        await journal.close()

    store.run(scenario)


# -- claims ----------------------------------------------------------------------------------


def test_claim_takes_over_expired_leases(store: Store) -> None:
    async def scenario() -> None:
        crashed = store.journal("crashed", lease=EXPIRED)
        for number in (3, 1, 2):
            await crashed.record(make_job(number))
        heir = store.journal("heir")
        await heir.renew()
        assert ids(await heir.claim(topics=TOPICS)) == ["task-1", "task-2", "task-3"]
        assert await store.journal("late").claim(topics=TOPICS) == [], "the heir's lease is live"
        back = store.journal("crashed", lease=LIVE)
        await back.renew()
        assert await back.claim(topics=TOPICS) == [], "its jobs are the heir's now"

    store.run(scenario)


def test_claim_leaves_the_jobs_of_live_owners(store: Store) -> None:
    async def scenario() -> None:
        alive = store.journal("alive")
        await alive.renew()
        await alive.record(make_job(1))
        await store.journal("crashed", lease=EXPIRED).record(make_job(2))
        heir = store.journal("heir")
        await heir.renew()
        assert ids(await heir.claim(topics=TOPICS)) == ["task-2"]
        assert await alive.claim(topics=TOPICS, running=["task-1"]) == [], "its runner has it"
        assert ids(await alive.claim(topics=TOPICS)) == ["task-1"], "no runner: retaken"

    store.run(scenario)


def test_claim_own_retakes_own_jobs_but_never_finished_ones(store: Store) -> None:
    async def scenario() -> None:
        mine = store.journal("mine")
        await mine.record(make_job(1))
        await mine.record(make_job(2, state=JobState.ACKNOWLEDGED))
        await mine.record(make_job(3, state=JobState.DELIVERED))
        await store.journal("gone", lease=EXPIRED).record(make_job(4, state=JobState.FAILED))
        assert ids(await mine.claim(topics=TOPICS)) == ["task-1", "task-2"]
        claimed = await mine.claim(topics=TOPICS)
        assert ids(claimed) == ["task-1", "task-2"], "claiming again is harmless"
        assert claimed[1] == make_job(2, state=JobState.ACKNOWLEDGED), "claims return whole jobs"

    store.run(scenario)


def test_an_owner_retakes_its_own_jobs_but_not_those_its_runners_hold(store: Store) -> None:
    """A restart under the same worker id: every round takes the jobs no runner holds,
    however many rounds that takes, and never one a runner holds."""

    async def scenario() -> None:
        before = store.journal("w1", lease=EXPIRED)
        for number in range(1, 8):
            await before.record(make_job(number, state=JobState.ACKNOWLEDGED))
        again = store.journal("w1")
        await again.renew()
        running: list[str] = []
        for _ in range(3):
            taken = ids(await again.claim(topics=TOPICS, limit=3, running=running))
            assert not set(taken) & set(running), "a job a runner holds is never taken"
            running += taken
        assert running == [f"task-{n}" for n in range(1, 8)], "every own job, in rounds"
        assert await again.claim(topics=TOPICS, running=running) == []
        assert await store.journal("peer").claim(topics=TOPICS) == [], "w1 lives: its own"

    store.run(scenario)


def test_claim_takes_only_jobs_of_the_topics_asked_for(store: Store) -> None:
    async def scenario() -> None:
        crashed = store.journal("crashed", lease=EXPIRED)
        for number, topic in [(1, "a"), (2, "b"), (3, "c"), (4, "a")]:
            await crashed.record(make_job(number, topic=topic))
        heir, other = store.journal("heir"), store.journal("other")
        await heir.renew()
        await other.renew()
        assert await heir.claim(topics=[]) == [], "no topics, nothing"
        assert await heir.claim(topics=["unknown"]) == []
        assert ids(await heir.claim(topics={"c", "a"})) == ["task-1", "task-3", "task-4"]
        assert ids(await other.claim(topics=("b",))) == ["task-2"]
        assert ids(await heir.claim(topics=["a"])) == ["task-1", "task-4"]
        assert await heir.claim(topics=["b"]) == []

    store.run(scenario)


def test_claim_takes_at_most_limit_jobs_oldest_first(store: Store) -> None:
    async def scenario() -> None:
        crashed = store.journal("crashed", lease=EXPIRED)
        for number in (5, 4, 3, 2, 1):
            await crashed.record(make_job(number))
        first, second = store.journal("first"), store.journal("second")
        await first.renew()
        await second.renew()
        assert ids(await first.claim(topics=TOPICS, limit=2)) == ["task-1", "task-2"]
        assert ids(await second.claim(topics=TOPICS, limit=2)) == ["task-3", "task-4"]
        everything = await first.claim(topics=TOPICS, limit=10)
        assert ids(everything) == ["task-1", "task-2", "task-5"]

    store.run(scenario)


def test_a_live_owner_keeps_its_jobs_however_many_it_holds(store: Store) -> None:
    """More jobs of a live owner than a claim takes never hide a dead owner's jobs."""

    async def scenario() -> None:
        busy = store.journal("busy")
        await busy.renew()
        await asyncio.gather(*(busy.record(make_job(number)) for number in range(1500)))
        dead = store.journal("dead", lease=EXPIRED)
        for number in range(1500, 1505):
            await dead.record(make_job(number))
        claimed = await store.journal("heir").claim(topics=TOPICS, limit=10)
        assert ids(claimed) == [f"task-{number}" for number in range(1500, 1505)]

    store.run(scenario)


def test_an_owner_without_a_lease_counts_as_dead(store: Store) -> None:
    async def scenario() -> None:
        vanished = store.journal("vanished")
        await vanished.renew()
        await vanished.record(make_job(1))
        assert await store.journal("heir").claim(topics=TOPICS) == []
        store.drop_lease("vanished")
        assert ids(await store.journal("heir").claim(topics=TOPICS)) == ["task-1"]

    store.run(scenario)


def test_concurrent_claimers_never_get_the_same_job(store: Store) -> None:
    # The memory journal's claimers share one store in one event loop: there each claim is
    # atomic because it never awaits; SQLite and PostgreSQL claim from separate connections.
    jobs = 120
    owners = [f"claimer-{n}" for n in range(4)]

    async def scenario() -> None:
        crashed = store.journal("crashed", lease=EXPIRED)
        for number in range(jobs):
            await crashed.record(make_job(number))
        claimers = [store.journal(owner) for owner in owners]
        for claimer in claimers:
            await claimer.renew()
        for _ in range(3):
            claimed = await asyncio.gather(
                *(claimer.claim(topics=TOPICS, limit=40) for claimer in claimers)
            )
            taken = [set(ids(batch)) for batch in claimed]
            for one in range(len(taken)):
                for other in range(one + 1, len(taken)):
                    assert not taken[one] & taken[other], "a job was claimed twice"
            assert set().union(*taken) == {f"task-{n}" for n in range(jobs)}
            assert all(len(batch) <= 40 for batch in claimed)

    store.run(scenario)


# -- leases ----------------------------------------------------------------------------------


def test_renew_extends_the_one_lease_of_an_owner(store: Store) -> None:
    async def scenario() -> None:
        short = store.journal("worker-a", lease=EXPIRED)
        await short.record(make_job(1))
        await short.record(make_job(2, state=JobState.DONE))
        await short.record(make_job(3, state=JobState.DELIVERED))
        worker_b = store.journal("worker-b")
        await worker_b.renew()
        await worker_b.record(make_job(4))
        await store.journal("worker-a", lease=LIVE).renew()
        assert await store.journal("heir").claim(topics=TOPICS) == [], "the lease is live"
        await store.journal("worker-a", lease=EXPIRED).renew()
        assert ids(await store.journal("heir").claim(topics=TOPICS)) == ["task-1", "task-2"]

    store.run(scenario)


def test_release_lets_another_owner_claim_at_once(store: Store) -> None:
    async def scenario() -> None:
        leaving, staying, heir = (store.journal(name) for name in ("leaving", "staying", "heir"))
        for journal in (leaving, staying, heir):
            await journal.renew()
        await leaving.record(make_job(1))
        await leaving.record(make_job(2, state=JobState.ACKNOWLEDGED))
        await staying.record(make_job(3))
        assert await heir.claim(topics=TOPICS) == []
        await leaving.release()
        assert ids(await heir.claim(topics=TOPICS)) == ["task-1", "task-2"]
        await leaving.renew()
        assert await leaving.claim(topics=TOPICS) == [], "the heir holds them now"

    store.run(scenario)


def test_release_of_one_job_gives_it_to_nobody(store: Store) -> None:
    async def scenario() -> None:
        worker_a, heir = store.journal("worker-a"), store.journal("heir")
        await worker_a.renew()
        await heir.renew()
        await worker_a.record(make_job(1))
        await worker_a.record(make_job(2))
        await worker_a.release("task-1")
        assert ids(await heir.claim(topics=TOPICS)) == ["task-1"], "claimable at once"
        assert ids(await worker_a.claim(topics=TOPICS)) == ["task-2"]
        await heir.release("task-2")  # not the heir's: left alone
        await worker_a.release("no-such-job")
        assert await store.journal("other").claim(topics=TOPICS) == []

    store.run(scenario)


def test_record_and_save_leave_the_lease_to_renew(store: Store) -> None:
    async def scenario() -> None:
        expired = store.journal("worker-a", lease=EXPIRED)
        await expired.renew()
        await expired.record(make_job(1))
        worker_a = store.journal("worker-a")
        assert await worker_a.save(make_job(1, state=JobState.ACKNOWLEDGED)) is True
        assert await worker_a.record(make_job(2)) is True
        heir = store.journal("heir")
        assert ids(await heir.claim(topics=TOPICS, limit=1)) == ["task-1"], "still run out"
        await worker_a.renew()
        assert await heir.claim(topics=TOPICS, running=["task-1"]) == [], (
            "renewed: task-2 is worker-a's again"
        )
        assert (await heir.get("task-1")) == make_job(1, state=JobState.ACKNOWLEDGED)

    store.run(scenario)


def test_save_never_overwrites_a_job_another_owner_holds(store: Store) -> None:
    """A worker paused past its lease wakes up after its heir claimed the job."""

    async def scenario() -> None:
        stale = store.journal("stale", lease=EXPIRED)
        await stale.record(make_job(1))
        heir = store.journal("heir")
        await heir.renew()
        assert ids(await heir.claim(topics=TOPICS)) == ["task-1"]
        await heir.save(make_job(1, state=JobState.DONE))
        assert await stale.save(make_job(1, state=JobState.ACKNOWLEDGED, attempts=2)) is False
        awake = store.journal("stale", lease=LIVE)
        await awake.renew()
        assert await awake.save(make_job(1, state=JobState.DELIVERED)) is False, "nor finish it"
        assert (await heir.get("task-1")) == make_job(1, state=JobState.DONE), "nothing written"
        assert ids(await heir.claim(topics=TOPICS)) == ["task-1"]

    store.run(scenario)


def test_save_takes_a_job_whose_lease_ran_out(store: Store) -> None:
    async def scenario() -> None:
        await store.journal("crashed", lease=EXPIRED).record(make_job(1))
        saver = store.journal("saver")
        await saver.renew()
        assert await saver.save(make_job(1, state=JobState.ACKNOWLEDGED)) is True
        assert await store.journal("heir").claim(topics=TOPICS) == []
        assert ids(await saver.claim(topics=TOPICS)) == ["task-1"], "the saver's now"

    store.run(scenario)


def test_a_finished_job_is_held_by_nobody(store: Store) -> None:
    """``pending retry`` puts a failed job back at once, whoever failed it."""

    async def scenario() -> None:
        worker_a = store.journal("worker-a")
        await worker_a.record(make_job(1, state=JobState.DONE))
        assert await worker_a.save(make_job(1, state=JobState.FAILED, error="deadline")) is True
        operator = store.journal("operator", lease=timedelta(0))
        assert await operator.save(make_job(1, state=JobState.DONE)) is True
        assert ids(await store.journal("heir").claim(topics=TOPICS)) == ["task-1"]

    store.run(scenario)


def test_a_saved_unknown_job_belongs_to_the_saver(store: Store) -> None:
    async def scenario() -> None:
        worker_a = store.journal("worker-a")
        await worker_a.renew()
        await worker_a.save(make_job(1, state=JobState.ACKNOWLEDGED))
        assert await store.journal("heir").claim(topics=TOPICS) == []
        assert ids(await worker_a.claim(topics=TOPICS)) == ["task-1"]

    store.run(scenario)


# -- leases on a manual clock (memory, SQLite) -----------------------------------------------

MINUTE = timedelta(seconds=60)


@pytest.fixture(params=["memory", "sqlite"])
def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Store, ManualClock]:
    clock = ManualClock()
    make: Callable[[str, timedelta], Journal]
    if request.param == "memory":
        shared = MemoryJournal(owner="nobody", clock=clock)

        def make(owner: str, lease: timedelta) -> Journal:
            return shared.share(owner=owner, lease=lease)

    else:

        def make(owner: str, lease: timedelta) -> Journal:
            return SqliteJournal(
                tmp_path / "journal.sqlite3", owner=owner, lease=lease, clock=clock
            )

    return Store(request.param, make), clock


def test_a_lease_runs_out_when_its_time_comes(clocked: tuple[Store, ManualClock]) -> None:
    store, clock = clocked

    async def scenario() -> None:
        worker_a = store.journal("worker-a", lease=MINUTE)
        await worker_a.renew()
        await worker_a.record(make_job(1))
        heir = store.journal("heir", lease=MINUTE)
        clock.advance(59)
        assert await heir.claim(topics=TOPICS) == []
        await worker_a.renew()
        clock.advance(59)
        assert await heir.claim(topics=TOPICS) == [], "renewed at 59 s: live until 119 s"
        clock.advance(1)
        assert ids(await heir.claim(topics=TOPICS)) == ["task-1"]

    store.run(scenario)


def test_a_worker_that_slept_past_its_lease_cannot_save(
    clocked: tuple[Store, ManualClock],
) -> None:
    store, clock = clocked

    async def scenario() -> None:
        sleeper = store.journal("sleeper", lease=MINUTE)
        await sleeper.renew()
        await sleeper.record(make_job(1))
        await sleeper.record(make_job(2))
        clock.advance(61)
        heir = store.journal("heir", lease=MINUTE)
        await heir.renew()
        assert ids(await heir.claim(topics=TOPICS, limit=1)) == ["task-1"]
        assert await sleeper.save(make_job(1, state=JobState.ACKNOWLEDGED)) is False
        assert await sleeper.save(make_job(2, state=JobState.ACKNOWLEDGED)) is True
        await sleeper.renew()
        assert await heir.claim(topics=TOPICS, running=["task-1"]) == [], (
            "the sleeper renewed: task-2 stays its own"
        )
        clock.advance(61)
        await heir.renew()
        assert ids(await heir.claim(topics=TOPICS, running=["task-1"])) == ["task-2"]

    store.run(scenario)


# -- who runs a job: fetch filters, unreadable rows -------------------------------------------


def test_a_claim_takes_only_jobs_taken_under_its_fetch_filters(store: Store) -> None:
    """Pods with the same topic and other filters (a tenant each) never take each other's
    jobs; a job taken under no filters is taken only by a claim for none."""

    async def scenario() -> None:
        dead = store.journal("dead", lease=EXPIRED)
        await dead.record(make_job(1, filter_key="tenant-a"))
        await dead.record(make_job(2, filter_key="tenant-b"))
        await dead.record(make_job(3))
        await dead.record(make_job(4, filter_key="tenant-a", topic="other"))
        counts = await store.journal("pod-a").filter_keys([*TOPICS, "other"])
        assert counts == {
            (TOPICS[0], "tenant-a"): 1,
            (TOPICS[0], "tenant-b"): 1,
            (TOPICS[0], ""): 1,
            ("other", "tenant-a"): 1,
        }
        pod_a = store.journal("pod-a")
        claimed = await pod_a.claim(topics=TOPICS, filters={TOPICS[0]: "tenant-a"})
        assert ids(claimed) == ["task-1"]
        assert claimed[0].filter_key == "tenant-a", "the key reads back"
        assert ids(await store.journal("plain").claim(topics=TOPICS)) == ["task-3"]
        pod_b = store.journal("pod-b")
        assert ids(await pod_b.claim(topics=TOPICS, filters={TOPICS[0]: "tenant-b"})) == ["task-2"]
        assert await pod_b.claim(topics=["other"], filters={TOPICS[0]: "tenant-a"}) == []

    store.run(scenario)


def test_a_saved_job_keeps_its_filter_key(store: Store) -> None:
    async def scenario() -> None:
        journal = store.journal("a")
        await journal.record(make_job(1, filter_key="k"))
        assert await journal.save(make_job(1, state=JobState.ACKNOWLEDGED, filter_key="k"))
        got = await journal.get("task-1")
        assert got is not None
        assert got.filter_key == "k"
        assert (await journal.jobs())[0].filter_key == "k"

    store.run(scenario)


def test_an_unreadable_row_is_given_back_and_marked_and_the_rest_are_claimed(
    store: Store,
) -> None:
    if store.kind == "memory":
        pytest.skip("the memory journal keeps Python objects: no row to misread")

    async def scenario() -> None:
        dead = store.journal("dead", lease=EXPIRED)
        for number in range(1, 5):
            await dead.record(make_job(number, state=JobState.ACKNOWLEDGED))
        store.corrupt("task-2")
        heir = store.journal("heir")
        await heir.renew()
        assert ids(await heir.claim(topics=TOPICS)) == ["task-1", "task-3", "task-4"]
        assert await heir.claim(topics=TOPICS, running=["task-1", "task-3", "task-4"]) == []
        assert await store.journal("other").claim(topics=TOPICS) == [], "marked: never again"
        (bad,) = await heir.unreadable()
        assert (bad.id, bad.topic, bad.state) == ("task-2", TOPICS[0], "acknowledged")
        assert "payload version 99" in bad.reason
        assert ids(await heir.jobs()) == ["task-1", "task-3", "task-4"], "listed apart"
        assert await heir.delete("task-2") is True, "pending cancel forgets it"
        assert await heir.unreadable() == []

    store.run(scenario)


# -- cancelled: a finished state -------------------------------------------------------------


def test_a_cancelled_job_is_finished_held_by_nobody_never_claimed_and_pruned(
    store: Store,
) -> None:
    async def scenario() -> None:
        worker_a = store.journal("worker-a")
        await worker_a.record(make_job(1, state=JobState.ACKNOWLEDGED))
        await worker_a.record(make_job(2, state=JobState.ACKNOWLEDGED))
        cancelled = make_job(
            1, state=JobState.CANCELLED, error="the process instance was cancelled"
        )
        assert await worker_a.save(cancelled) is True
        assert await worker_a.get("task-1") == cancelled
        assert ids(await worker_a.unfinished()) == ["task-2"]
        assert await worker_a.unfinished_instances() == {"instance-2"}
        assert ids(await worker_a.jobs(states=[JobState.CANCELLED])) == ["task-1"]
        assert (await worker_a.counts())[JobState.CANCELLED] == 1
        assert ids(await worker_a.claim(topics=TOPICS)) == ["task-2"]
        await worker_a.release()
        assert ids(await store.journal("heir").claim(topics=TOPICS)) == ["task-2"]
        # held by nobody: the task offered again starts it afresh, whoever fetches it
        assert await store.journal("other").save(make_job(1, state=JobState.RECORDED)) is True
        await store.journal("other").save(cancelled)
        assert await worker_a.prune(finished_before=1_760_000_001.5) == 1

    store.run(scenario)
