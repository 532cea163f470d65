"""One contract for every journal: memory, SQLite and PostgreSQL behave alike.

Each contract test runs against the three stores. A :class:`Store` opens journals for several
owners on one shared store (one MemoryJournal shared with :meth:`MemoryJournal.share`, one
SQLite file, one PostgreSQL table), as several worker processes would see it. Leases are
made expired or live by the lease a journal is opened with (a negative lease is expired at
once), never by sleeping. The store-specific tests at the end cover what only a durable
store promises: a job recorded by a process killed with SIGKILL is there for the next one;
a lost PostgreSQL connection is replaced.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from camunda_relay.errors import ConfigurationError, VariableError
from camunda_relay.journal import Journal, MemoryJournal, open_journal
from camunda_relay.journal import codec as journal_codec
from camunda_relay.journal import sqlite as journal_sqlite
from camunda_relay.journal.postgres import APPLICATION_NAME, PostgresJournal
from camunda_relay.journal.sqlite import SCHEMA_VERSION, SqliteJournal
from camunda_relay.replies.job import Job, JobState
from camunda_relay.task import Task
from camunda_relay.variables import Unreadable
from tests.support.postgres import PostgresServer

T = TypeVar("T")

LIVE = timedelta(minutes=10)
EXPIRED = timedelta(seconds=-1)

STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class Store:
    """Journals for several owners on one shared store; closed when a scenario ends."""

    def __init__(self, kind: str, make: Callable[[str, timedelta], Journal]) -> None:
        self.kind = kind
        self._make = make
        self._opened: list[Journal] = []

    def journal(self, owner: str = "worker-a", lease: timedelta = LIVE) -> Journal:
        journal = self._make(owner, lease)
        assert journal.owner == owner
        self._opened.append(journal)
        return journal

    def run(self, scenario: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            try:
                return await asyncio.wait_for(scenario(), timeout=60)
            finally:
                for journal in self._opened:
                    await journal.close()
                self._opened.clear()

        return asyncio.run(main())


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:
    """A fresh database for this module; every test gets a table of its own in it."""
    name = f"journal_contract_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(name)
    return postgres_server.dsn(name)


def unique_table() -> str:
    return f"jobs_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    kind: str = request.param
    make: Callable[[str, timedelta], Journal]
    if kind == "memory":
        shared = MemoryJournal(owner="nobody")

        def make(owner: str, lease: timedelta) -> Journal:
            return shared.share(owner=owner, lease=lease)

    elif kind == "sqlite":
        path = tmp_path / "journal.sqlite3"

        def make(owner: str, lease: timedelta) -> Journal:
            return SqliteJournal(path, owner=owner, lease=lease)

    else:
        dsn: str = request.getfixturevalue("pg_dsn")
        table = unique_table()

        def make(owner: str, lease: timedelta) -> Journal:
            return PostgresJournal(dsn, owner=owner, lease=lease, table=table)

    return Store(kind, make)


def make_job(
    number: int,
    *,
    state: JobState = JobState.RECORDED,
    variables: dict[str, object] | None = None,
    **changes: Any,
) -> Job:
    """Job ``number``, created ``number`` seconds after a fixed moment (so order is known)."""
    task = Task(
        id=f"task-{number}",
        topic="messageSending",
        worker_id="worker-a",
        process_instance_id=f"instance-{number}",
        business_key=f"bk-{number}",
        variables=variables or {},
    )
    moment = 1_760_000_000.0 + number
    return Job(
        task=task,
        message="sample_response",
        state=state,
        created_at=moment,
        updated_at=moment,
        **changes,
    )


def ids(jobs: list[Job]) -> list[str]:
    return [job.id for job in jobs]


EVERY_KIND_OF_VARIABLE: dict[str, object] = {
    "text": "grüße, 世界",
    "nul": "a\x00b",
    "long_text": "x" * 5000,
    "empty": "",
    "integer": 42,
    "long": 2**40,
    "negative": -7,
    "float": 2.5,
    "true": True,
    "false": False,
    "nothing": None,
    "mapping": {"a": [1, 2, {"b": None}], "c": "d"},
    "sequence": [1, "two", 3.0, False, None],
    "moment": datetime(2026, 11, 27, 21, 0, 0, 123000, tzinfo=UTC),
    "elsewhere": datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=timezone(timedelta(hours=-5))),
    "blob": bytes(range(256)),
    "java": Unreadable("Object", "application/x-java-serialized-object"),
    "file": Unreadable("File"),
}


def rich_job() -> Job:
    job = make_job(1, variables=EVERY_KIND_OF_VARIABLE)
    task = Task(
        id=job.task.id,
        topic=job.task.topic,
        worker_id="worker-7",
        process_instance_id=job.task.process_instance_id,
        execution_id="execution-1",
        activity_id="send",
        activity_instance_id="send:1",
        process_definition_id="correlation-message:1:abc",
        process_definition_key="correlation-message",
        business_key="bk-1",
        tenant_id="tenant",
        retries=3,
        priority=5,
        lock_expiration=datetime(2026, 11, 27, 21, 5, 0, 123456, tzinfo=UTC),
        variables=EVERY_KIND_OF_VARIABLE,
        job_id="job-1",
    )
    return Job(
        task=task,
        message="sample_response",
        by_business_key=True,
        state=JobState.DONE,
        attempts=2,
        deliveries=1,
        result={
            "var1": 1,
            "var2": "value",
            "when": datetime(2026, 11, 27, 22, 0, 0, 500000, tzinfo=UTC),
            "raw": b"\x00\xff",
            "nested": {"list": [1, 2.5, "three"]},
            "none": None,
        },
        error="correlation refused (NoMatchingExecution)",
        deadline=1_760_000_600.25,
        created_at=1_760_000_000.125,
        updated_at=1_760_000_100.5,
    )


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


def test_close_can_be_called_twice(store: Store) -> None:
    async def scenario() -> None:
        journal = store.journal()
        await journal.record(make_job(1))
        await journal.close()
        await journal.close()

    store.run(scenario)


# -- leases ------------------------------------------------------------------------------------


def test_claim_takes_over_expired_leases(store: Store) -> None:
    async def scenario() -> None:
        crashed = store.journal("crashed", lease=EXPIRED)
        for number in (3, 1, 2):
            await crashed.record(make_job(number))
        heir = store.journal("heir")
        assert ids(await heir.claim()) == ["task-1", "task-2", "task-3"]
        assert await store.journal("late").claim() == [], "the heir's leases are live"
        assert await store.journal("crashed", lease=LIVE).renew() == 0, "its leases are lost"

    store.run(scenario)


def test_claim_leaves_live_leases_of_other_owners(store: Store) -> None:
    async def scenario() -> None:
        alive = store.journal("alive")
        await alive.record(make_job(1))
        await store.journal("crashed", lease=EXPIRED).record(make_job(2))
        assert ids(await store.journal("heir").claim()) == ["task-2"]
        assert ids(await alive.claim()) == ["task-1"]

    store.run(scenario)


def test_claim_retakes_own_jobs_but_never_finished_ones(store: Store) -> None:
    async def scenario() -> None:
        mine = store.journal("mine")
        await mine.record(make_job(1))
        await mine.record(make_job(2, state=JobState.ACKNOWLEDGED))
        await mine.record(make_job(3, state=JobState.DELIVERED))
        await store.journal("gone", lease=EXPIRED).record(make_job(4, state=JobState.FAILED))
        assert ids(await mine.claim()) == ["task-1", "task-2"]
        assert ids(await mine.claim()) == ["task-1", "task-2"], "claiming again is harmless"
        claimed = await mine.claim()
        assert claimed[1] == make_job(2, state=JobState.ACKNOWLEDGED), "claims return whole jobs"

    store.run(scenario)


def test_claim_takes_at_most_limit_jobs_oldest_first(store: Store) -> None:
    async def scenario() -> None:
        crashed = store.journal("crashed", lease=EXPIRED)
        for number in (5, 4, 3, 2, 1):
            await crashed.record(make_job(number))
        first = store.journal("first")
        assert ids(await first.claim(limit=2)) == ["task-1", "task-2"]
        assert ids(await store.journal("second").claim(limit=2)) == ["task-3", "task-4"]
        assert ids(await first.claim(limit=10)) == ["task-1", "task-2", "task-5"]

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
        for _ in range(3):
            claimed = await asyncio.gather(*(claimer.claim(limit=40) for claimer in claimers))
            taken = [set(ids(batch)) for batch in claimed]
            for one in range(len(taken)):
                for other in range(one + 1, len(taken)):
                    assert not taken[one] & taken[other], "a job was claimed twice"
            assert set().union(*taken) == {f"task-{n}" for n in range(jobs)}
            assert all(len(batch) <= 40 for batch in claimed)

    store.run(scenario)


def test_renew_extends_the_leases_this_owner_holds(store: Store) -> None:
    async def scenario() -> None:
        short = store.journal("worker-a", lease=EXPIRED)
        await short.record(make_job(1))
        await short.record(make_job(2, state=JobState.DONE))
        await short.record(make_job(3, state=JobState.DELIVERED))
        await store.journal("worker-b").record(make_job(4))
        assert await store.journal("worker-a", lease=LIVE).renew() == 2
        assert await store.journal("heir").claim() == [], "the renewed leases are live"
        assert await store.journal("nobody").renew() == 0

    store.run(scenario)


def test_release_lets_another_owner_claim_at_once(store: Store) -> None:
    async def scenario() -> None:
        leaving = store.journal("leaving")
        await leaving.record(make_job(1))
        await leaving.record(make_job(2, state=JobState.ACKNOWLEDGED))
        await store.journal("staying").record(make_job(3))
        heir = store.journal("heir")
        assert await heir.claim() == []
        await leaving.release()
        assert ids(await heir.claim()) == ["task-1", "task-2"]
        assert await leaving.renew() == 0
        assert await heir.renew() == 2

    store.run(scenario)


def test_save_by_the_owner_renews_the_lease(store: Store) -> None:
    async def scenario() -> None:
        await store.journal("worker-a", lease=EXPIRED).record(make_job(1))
        worker_a = store.journal("worker-a")
        assert await worker_a.save(make_job(1, state=JobState.ACKNOWLEDGED)) is True
        assert await store.journal("heir").claim() == [], "save renewed the lease"
        assert await worker_a.renew() == 1
        assert (await worker_a.get("task-1")) == make_job(1, state=JobState.ACKNOWLEDGED)

    store.run(scenario)


def test_save_never_overwrites_a_job_another_owner_holds(store: Store) -> None:
    """A worker paused past its lease wakes up after its heir claimed the job."""

    async def scenario() -> None:
        stale = store.journal("stale", lease=EXPIRED)
        await stale.record(make_job(1))
        heir = store.journal("heir")
        assert ids(await heir.claim()) == ["task-1"]
        await heir.save(make_job(1, state=JobState.DONE))
        assert await stale.save(make_job(1, state=JobState.ACKNOWLEDGED, attempts=2)) is False
        assert (await heir.get("task-1")) == make_job(1, state=JobState.DONE), "nothing written"
        assert await store.journal("stale", lease=LIVE).renew() == 0
        assert await heir.renew() == 1

    store.run(scenario)


def test_save_takes_a_job_whose_lease_ran_out(store: Store) -> None:
    async def scenario() -> None:
        await store.journal("crashed", lease=EXPIRED).record(make_job(1))
        saver = store.journal("saver")
        assert await saver.save(make_job(1, state=JobState.ACKNOWLEDGED)) is True
        assert await saver.renew() == 1, "the saver holds the job now"
        assert await store.journal("heir").claim() == []

    store.run(scenario)


def test_a_finished_job_is_held_by_nobody(store: Store) -> None:
    """``pending retry`` puts a failed job back at once, whoever failed it."""

    async def scenario() -> None:
        worker_a = store.journal("worker-a")
        await worker_a.record(make_job(1, state=JobState.DONE))
        assert await worker_a.save(make_job(1, state=JobState.FAILED, error="deadline")) is True
        assert await worker_a.renew() == 0
        operator = store.journal("operator", lease=timedelta(0))
        assert await operator.save(make_job(1, state=JobState.DONE)) is True
        assert ids(await store.journal("heir").claim()) == ["task-1"]

    store.run(scenario)


def test_a_saved_unknown_job_belongs_to_the_saver(store: Store) -> None:
    async def scenario() -> None:
        await store.journal("worker-a").save(make_job(1, state=JobState.ACKNOWLEDGED))
        assert await store.journal("worker-a").renew() == 1

    store.run(scenario)


# -- SQLite only -----------------------------------------------------------------------------

_RECORD_THEN_DIE = """
import asyncio, os, signal, sys
from camunda_relay.journal import codec as journal_codec
from camunda_relay.journal import sqlite as journal_sqlite
from camunda_relay.journal.sqlite import SqliteJournal

async def main():
    journal = SqliteJournal(sys.argv[1], owner="doomed")
    assert await journal.record(journal_codec.loads(sys.stdin.read()))
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def test_sqlite_job_recorded_before_kill_9_is_there_after(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.sqlite3"
    job = rich_job()
    died = subprocess.run(
        [sys.executable, "-c", _RECORD_THEN_DIE, str(path)],
        input=journal_codec.dumps(job),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr

    async def scenario() -> None:
        journal = SqliteJournal(path, owner="heir")
        try:
            assert await journal.get(job.id) == job
            assert ids(await journal.unfinished()) == [job.id]
            assert await journal.claim() == [], "the dead owner's lease still runs"
        finally:
            await journal.close()

    asyncio.run(scenario())


def test_sqlite_second_journal_sees_a_job_while_the_first_is_still_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def scenario() -> None:
        first = SqliteJournal(path, owner="first", lease=EXPIRED)
        second = SqliteJournal(path, owner="second")
        try:
            await first.record(make_job(1))
            assert ids(await second.claim()) == ["task-1"]
        finally:
            await second.close()
            await first.close()

    asyncio.run(scenario())


def test_sqlite_commits_concurrent_writes_together_and_a_failing_one_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups: list[int] = []
    commit_group = journal_sqlite._commit_group

    def counted(conn: sqlite3.Connection, actions: list[Any]) -> list[tuple[bool, object]]:
        groups.append(len(actions))
        return commit_group(conn, actions)

    monkeypatch.setattr(journal_sqlite, "_commit_group", counted)

    async def scenario() -> None:
        journal = SqliteJournal(tmp_path / "journal.sqlite3", owner="worker-a")
        try:
            writes = [journal.save(make_job(n, state=JobState.ACKNOWLEDGED)) for n in range(50)]
            broken = journal._write(lambda conn: conn.execute("INSERT INTO nowhere VALUES (1)"))
            outcomes = await asyncio.gather(*writes, broken, return_exceptions=True)
            assert outcomes[:50] == [True] * 50
            assert isinstance(outcomes[50], sqlite3.OperationalError)
            assert len(await journal.unfinished()) == 50
        finally:
            await journal.close()
        other = SqliteJournal(tmp_path / "journal.sqlite3", owner="reader")
        try:
            assert len(await other.unfinished()) == 50, "committed, as seen from elsewhere"
        finally:
            await other.close()

    asyncio.run(scenario())
    assert sum(groups) == 51
    assert len(groups) < 51, "writes that arrive together share a commit"


def test_sqlite_file_is_created_in_wal_mode_with_its_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "journal.sqlite3"

    async def scenario() -> None:
        journal = SqliteJournal(path, owner="a")
        try:
            assert await journal.counts() == dict.fromkeys(JobState, 0)
        finally:
            await journal.close()

    asyncio.run(scenario())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(relay_jobs)")}
        assert {"relay_jobs_state", "relay_jobs_lease_until"} <= indexes
    conn.close()


def test_sqlite_refuses_a_journal_of_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()

    async def scenario() -> None:
        journal = SqliteJournal(path, owner="a")
        try:
            with pytest.raises(ConfigurationError, match="newer version"):
                await journal.get("x")
        finally:
            await journal.close()

    asyncio.run(scenario())


def test_sqlite_journal_refuses_calls_after_close(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = SqliteJournal(tmp_path / "journal.sqlite3", owner="a")
        await journal.close()
        with pytest.raises(RuntimeError, match="closed"):
            await journal.get("x")

    asyncio.run(scenario())


# -- PostgreSQL only -------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_reconnects_after_the_connection_is_lost(pg_dsn: str) -> None:
    async def scenario() -> None:
        journal = PostgresJournal(pg_dsn, owner="a", table=unique_table())
        try:
            await journal.record(make_job(1))
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) "
                    "FROM pg_stat_activity WHERE application_name = %s "
                    "AND datname = current_database() AND pid <> pg_backend_pid()",
                    (APPLICATION_NAME,),
                ).fetchone()
            assert killed == (1,)
            assert await journal.get("task-1") == make_job(1)
        finally:
            await journal.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("table", ["", "Jobs", "1jobs", "jobs; drop table x", "a" * 49])
def test_postgres_refuses_a_table_name_it_would_have_to_quote(table: str) -> None:
    with pytest.raises(ConfigurationError, match="table name"):
        PostgresJournal("postgresql://u:p@localhost/db", owner="a", table=table)


def test_postgres_journal_never_shows_its_password() -> None:
    journal = PostgresJournal("postgresql://u:s3cret@localhost/db", owner="a")
    assert "s3cret" not in repr(journal)
    with pytest.raises(ConfigurationError) as raised:
        PostgresJournal("postgresql://u:s3cret@localhost/db?bogus=1", owner="a")
    assert "s3cret" not in str(raised.value)


# -- the factory and the codec ---------------------------------------------------------------


def test_open_journal_picks_the_store_from_the_setting(tmp_path: Path) -> None:
    memory = open_journal(":memory:", owner="a", lease=LIVE)
    assert isinstance(memory, MemoryJournal)
    assert memory.owner == "a"
    for url in ("postgresql://u:p@localhost/db", "postgres://u:p@localhost/db"):
        assert isinstance(open_journal(url, owner="a", lease=LIVE), PostgresJournal)
    path = tmp_path / "new" / "folder" / "journal.sqlite3"
    sqlite = open_journal(str(path), owner="a", lease=EXPIRED)
    assert isinstance(sqlite, SqliteJournal)

    async def scenario() -> None:
        try:
            await sqlite.record(make_job(1))
        finally:
            await sqlite.close()

    asyncio.run(scenario())
    assert path.is_file()


@pytest.mark.parametrize("setting", ["mysql://u:p@localhost/db", "", "  "])
def test_open_journal_refuses_what_it_cannot_open(setting: str) -> None:
    with pytest.raises(ConfigurationError):
        open_journal(setting, owner="a", lease=LIVE)


def test_a_journal_needs_an_owner(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="owner"):
        SqliteJournal(tmp_path / "journal.sqlite3", owner=" ")
    with pytest.raises(ConfigurationError, match="owner"):
        MemoryJournal(owner="")


def test_the_payload_is_plain_json_with_typed_variables() -> None:
    payload = json.loads(journal_codec.dumps(rich_job()))
    assert payload["v"] == journal_codec.PAYLOAD_VERSION
    assert payload["state"] == "done"
    assert payload["task"]["variables"]["moment"] == {
        "value": "2026-11-27T21:00:00.123+0000",
        "type": "Date",
        "valueInfo": {},
    }
    assert payload["task"]["variables"]["java"] == {
        "type": "Object",
        "unreadable": True,
        "serializationFormat": "application/x-java-serialized-object",
    }
    assert payload["result"]["raw"] == {"value": "AP8=", "type": "Bytes", "valueInfo": {}}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "cannot be read"),
        ('{"v": 99, "task": {"id": "t-9"}}', "payload version 99"),
        ('{"v": 1, "task": {"id": "t-9"}}', "'t-9'.*missing field"),
    ],
)
def test_an_unreadable_payload_is_a_corrupt_job(text: str, problem: str) -> None:
    with pytest.raises(journal_codec.CorruptJob, match=problem):
        journal_codec.loads(text)


_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_MOMENTS = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
_VALUES = _JSON | st.binary(max_size=64) | _MOMENTS


@settings(max_examples=200, deadline=None)
@given(values=st.dictionaries(st.text(min_size=1), _VALUES, max_size=6), result=_VALUES)
def test_the_codec_round_trips_any_sendable_values(
    values: dict[str, object], result: object
) -> None:
    job = make_job(1, variables=values, result={"result": result})
    assert journal_codec.loads(journal_codec.dumps(job)) == job
