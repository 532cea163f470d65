"""What only the SQLite journal promises: a job recorded by a process killed with SIGKILL is
there for the next one, writes are committed in groups, the file's schema is versioned and a
version-1 file is migrated, claims read through the claim index, and SQLite's errors arrive
as journal errors."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from camunda_relay.errors import ConfigurationError, JournalError, JournalUnavailable
from camunda_relay.journal import codec as journal_codec
from camunda_relay.journal import sqlite_connection, sqlite_schema
from camunda_relay.journal.base import Verdict
from camunda_relay.journal.codec import dumps_answer
from camunda_relay.journal.sqlite import SCHEMA_VERSION, SqliteJournal
from camunda_relay.replies.job import Answer, JobState
from camunda_relay.replies.tokens import new_token
from tests.support.journals import EXPIRED, TOPICS, ids, make_job, rich_job

_RECORD_THEN_DIE = """
import asyncio, os, signal, sys
from camunda_relay.journal import codec as journal_codec
from camunda_relay.journal.sqlite import SqliteJournal

async def main():
    journal = SqliteJournal(sys.argv[1], owner="doomed")
    await journal.renew()
    assert await journal.record(journal_codec.loads(sys.stdin.read()))
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def test_a_job_recorded_before_kill_9_is_there_after(tmp_path: Path) -> None:
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
            assert await journal.claim(topics=TOPICS) == [], "the dead owner's lease still runs"
        finally:
            await journal.close()

    asyncio.run(scenario())


def test_a_second_journal_sees_a_job_while_the_first_is_still_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def scenario() -> None:
        first = SqliteJournal(path, owner="first", lease=EXPIRED)
        second = SqliteJournal(path, owner="second")
        try:
            await first.record(make_job(1))
            assert ids(await second.claim(topics=TOPICS)) == ["task-1"]
        finally:
            await second.close()
            await first.close()

    asyncio.run(scenario())


def test_concurrent_writes_commit_together_and_a_failing_one_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups: list[int] = []
    commit_group = sqlite_connection.commit_group

    def counted(
        conn: sqlite3.Connection, actions: list[Any], *, synced: bool = True
    ) -> list[tuple[bool, object]]:
        groups.append(len(actions))
        return commit_group(conn, actions, synced=synced)

    monkeypatch.setattr(sqlite_connection, "commit_group", counted)

    async def scenario() -> None:
        journal = SqliteJournal(tmp_path / "journal.sqlite3", owner="worker-a")
        try:
            writes = [journal.save(make_job(n, state=JobState.ACKNOWLEDGED)) for n in range(50)]
            broken = journal._write(lambda conn: conn.execute("INSERT INTO nowhere VALUES (1)"))
            outcomes = await asyncio.gather(*writes, broken, return_exceptions=True)
            assert outcomes[:50] == [True] * 50
            failed = outcomes[50]
            assert isinstance(failed, JournalError)
            assert not isinstance(failed, JournalUnavailable), "a bug, not worth retrying"
            assert "no such table: nowhere" in str(failed)
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


def test_a_group_with_one_synced_write_is_synced_and_one_without_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups: list[tuple[int, bool, int]] = []  # (writes, synced, PRAGMA synchronous)
    commit_group = sqlite_connection.commit_group

    def counted(
        conn: sqlite3.Connection, actions: list[Any], *, synced: bool = True
    ) -> list[tuple[bool, object]]:
        outcomes = commit_group(conn, actions, synced=synced)
        (mode,) = conn.execute("PRAGMA synchronous").fetchone()
        groups.append((len(actions), synced, mode))
        return outcomes

    monkeypatch.setattr(sqlite_connection, "commit_group", counted)

    async def scenario() -> None:
        journal = SqliteJournal(tmp_path / "journal.sqlite3", owner="worker-a")
        try:
            await journal.renew()
            jobs = [make_job(n, state=JobState.ACKNOWLEDGED) for n in range(3)]
            await asyncio.gather(*(journal.save(job, synced=False) for job in jobs))
            done = [job.advance(JobState.DONE) for job in jobs]
            await asyncio.gather(
                journal.save(done[0], synced=False),
                journal.save(done[1]),
                journal.save(done[2], synced=False),
            )
            assert [job.state for job in await journal.unfinished()] == [JobState.DONE] * 3
        finally:
            await journal.close()

    asyncio.run(scenario())
    full, normal = 2, 1
    assert groups[0] == (1, True, full), "the renewal"
    assert {(synced, mode) for _, synced, mode in groups[1:]} <= {(False, normal), (True, full)}
    assert groups[-1][1:] == (True, full), "the group with the synced save"
    assert sum(writes for writes, _, _ in groups[1:]) == 6


def test_the_file_is_created_in_wal_mode_with_its_schema_version(tmp_path: Path) -> None:
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
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (5,)
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(relay_jobs)")}
        assert {"relay_jobs_state", "relay_jobs_claim", "relay_jobs_expiry"} <= indexes
        columns = {row[1] for row in conn.execute("PRAGMA table_info(relay_owners)")}
        assert columns == {"owner", "lease_until"}
    conn.close()


def test_a_journal_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
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


def test_calls_after_close_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = SqliteJournal(tmp_path / "journal.sqlite3", owner="a")
        await journal.close()
        with pytest.raises(RuntimeError, match="closed"):
            await journal.get("x")

    asyncio.run(scenario())


# -- migration -------------------------------------------------------------------------------

# The layout of schema version 1, as the first camunda-relay wrote it.
_VERSION_1 = """
CREATE TABLE relay_jobs (
    id TEXT PRIMARY KEY, topic TEXT NOT NULL, process_instance_id TEXT NOT NULL,
    business_key TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL,
    deliveries INTEGER NOT NULL, error TEXT, deadline REAL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, owner TEXT NOT NULL, lease_until REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX relay_jobs_state ON relay_jobs (state);
CREATE INDEX relay_jobs_lease_until ON relay_jobs (lease_until);
PRAGMA user_version = 1;
"""
FAR = 4_000_000_000.0  # a lease that runs for decades
PAST = 1_000_000_000.0  # one that ran out long ago


def write_version_1(path: Path, rows: list[tuple[int, JobState, str, float]]) -> None:
    """A version-1 file with jobs (number, state, owner, lease_until)."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(_VERSION_1)
        for number, state, owner, lease_until in rows:
            job = make_job(number, state=state)
            row = {
                **journal_codec.columns(job),
                "owner": owner,
                "lease_until": lease_until,
                "payload": journal_codec.dumps(job),
            }
            del row["token_hash"]  # version 1 had no deferred replies
            del row["filter_key"]  # nor fetch filters
            names = ", ".join(row)
            values = ", ".join(f":{name}" for name in row)
            conn.execute(f"INSERT INTO relay_jobs ({names}) VALUES ({values})", row)  # noqa: S608
        conn.commit()
    finally:
        conn.close()


def test_a_version_1_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    write_version_1(
        path,
        [
            (1, JobState.ACKNOWLEDGED, "alive", FAR),
            (2, JobState.DONE, "alive", PAST),  # saved earlier: the latest lease counts
            (3, JobState.RECORDED, "dead", PAST),
            (4, JobState.DELIVERED, "alive", 0.0),
            (5, JobState.FAILED, "dead", 0.0),
            (6, JobState.DONE, "released", 0.0),
        ],
    )

    async def scenario() -> None:
        heir = SqliteJournal(path, owner="heir")
        try:
            await heir.renew()
            assert ids(await heir.jobs()) == [f"task-{n}" for n in range(1, 7)]
            assert await heir.get("task-2") == make_job(2, state=JobState.DONE)
            assert ids(await heir.claim(topics=TOPICS)) == ["task-3", "task-6"]
            alive = SqliteJournal(path, owner="alive")
            try:
                assert ids(await alive.claim(topics=TOPICS)) == ["task-1", "task-2"]
                assert await alive.save(make_job(4, state=JobState.DONE)) is True
            finally:
                await alive.close()
        finally:
            await heir.close()

    asyncio.run(scenario())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        leases = dict(conn.execute("SELECT owner, lease_until FROM relay_owners"))
        assert leases["alive"] == FAR
        assert "lease_until" not in {
            row[1] for row in conn.execute("PRAGMA table_info(relay_jobs)")
        }
        finished = conn.execute("SELECT DISTINCT owner FROM relay_jobs WHERE id = 'task-5'")
        assert finished.fetchall() == [("",)], "finished jobs are nobody's"
    conn.close()


# -- claims use the index --------------------------------------------------------------------


def test_the_claim_reads_jobs_through_the_claim_index_only(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def scenario() -> None:
        journal = SqliteJournal(path, owner="a")
        try:
            await journal.record(make_job(1))
        finally:
            await journal.close()

    asyncio.run(scenario())
    parameters = {
        "me": "a",
        "now": 0.0,
        "wanted": '[["t", ""]]',
        "running": '["x"]',
        "limit": 10,
    }
    with sqlite3.connect(path) as conn:
        for statement in (sqlite_schema.CLAIM, sqlite_schema.PRUNE_OWNERS):
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, parameters)]
            reads = [step for step in plan if "relay_jobs" in step]
            assert reads, plan
            # The one SCAN is the walk's first step, ORDER BY owner LIMIT 1 along the index;
            # parked deferred jobs past their deadline come from the expiry index.
            indexes = ("INDEX relay_jobs_claim", "INDEX relay_jobs_expiry", "(id=?)")
            assert all(any(index in step for index in indexes) for step in reads), plan
            assert "SCAN relay_jobs" not in plan, "never the table itself"
    conn.close()


def test_leases_of_owners_that_hold_nothing_are_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def scenario() -> None:
        gone = SqliteJournal(path, owner="gone", lease=EXPIRED)
        idle = SqliteJournal(path, owner="idle")
        heir = SqliteJournal(path, owner="heir")
        try:
            for journal in (gone, idle, heir):
                await journal.renew()
            await gone.record(make_job(1))
            assert ids(await heir.claim(topics=TOPICS)) == ["task-1"]
            await heir.claim(topics=TOPICS)
        finally:
            for journal in (gone, idle, heir):
                await journal.close()

    asyncio.run(scenario())
    with sqlite3.connect(path) as conn:
        owners = {owner for (owner,) in conn.execute("SELECT owner FROM relay_owners")}
    conn.close()
    assert owners == {"idle", "heir"}, "a live lease stays even with no jobs"


# -- errors ----------------------------------------------------------------------------------


def test_a_locked_file_is_unavailable_for_now(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    blocker = sqlite3.connect(path, isolation_level=None)

    async def scenario() -> None:
        journal = SqliteJournal(path, owner="a", busy_timeout=timedelta(milliseconds=50))
        try:
            await journal.record(make_job(1))
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(JournalUnavailable, match="locked") as raised:
                await journal.save(make_job(1, state=JobState.ACKNOWLEDGED))
            assert raised.value.retryable
            blocker.execute("ROLLBACK")
            assert await journal.save(make_job(1, state=JobState.ACKNOWLEDGED)) is True
        finally:
            await journal.close()

    try:
        asyncio.run(scenario())
    finally:
        blocker.close()


def test_a_folder_is_refused_for_good(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = SqliteJournal(tmp_path, owner="a")  # a folder, not a file
        try:
            with pytest.raises(JournalError, match="is a folder, not a file") as raised:
                await journal.get("x")
            assert not raised.value.retryable
        finally:
            await journal.close()

    asyncio.run(scenario())


# The layout of schema version 2 (one lease per owner, no deferred replies).
_VERSION_2 = """
CREATE TABLE relay_jobs (
    id TEXT PRIMARY KEY, topic TEXT NOT NULL, process_instance_id TEXT NOT NULL,
    business_key TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL,
    deliveries INTEGER NOT NULL, error TEXT, deadline REAL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, owner TEXT NOT NULL, payload TEXT NOT NULL
);
CREATE INDEX relay_jobs_state ON relay_jobs (state);
CREATE INDEX relay_jobs_claim ON relay_jobs (owner, topic, created_at, id)
    WHERE state IN ('acknowledged', 'done', 'failing', 'recorded');
CREATE TABLE relay_owners (owner TEXT PRIMARY KEY, lease_until REAL NOT NULL) WITHOUT ROWID;
PRAGMA user_version = 2;
"""


def test_a_version_2_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(_VERSION_2)
    for number, state in ((1, JobState.DONE), (2, JobState.DELIVERED)):
        job = make_job(number, state=state)
        row = {**journal_codec.columns(job), "owner": "", "payload": journal_codec.dumps(job)}
        del row["token_hash"], row["filter_key"]
        names = ", ".join(row)
        values = ", ".join(f":{name}" for name in row)
        conn.execute(f"INSERT INTO relay_jobs ({names}) VALUES ({values})", row)  # noqa: S608
    conn.commit()
    conn.close()

    async def scenario() -> None:
        journal = SqliteJournal(path, owner="heir")
        try:
            await journal.renew()
            assert await journal.get("task-2") == make_job(2, state=JobState.DELIVERED)
            assert ids(await journal.claim(topics=TOPICS)) == ["task-1"]
            _, digest = new_token()
            deferred = make_job(3, state=JobState.DEFERRED, token_hash=digest, deadline=FAR)
            assert await journal.save(deferred) is True
            answer = dumps_answer(Answer(variables={"ok": True}))
            assert await journal.answer(digest, answer) is Verdict.ACCEPTED
            await journal.release("task-3")
            claimed = await journal.claim(topics=TOPICS, running=["task-1"])
            assert ids(claimed) == ["task-3"]
            assert claimed[0].answer == Answer(variables={"ok": True})
        finally:
            await journal.close()

    asyncio.run(scenario())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(relay_jobs)")}
        assert {"relay_jobs_claim", "relay_jobs_token"} <= indexes
    conn.close()


# The layout of schema version 3 (the whole job in its payload).
_VERSION_3 = """
CREATE TABLE relay_jobs (
    id TEXT PRIMARY KEY, topic TEXT NOT NULL, process_instance_id TEXT NOT NULL,
    business_key TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL,
    deliveries INTEGER NOT NULL, error TEXT, deadline REAL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, owner TEXT NOT NULL, payload TEXT NOT NULL, token_hash TEXT,
    answer TEXT
);
CREATE INDEX relay_jobs_state ON relay_jobs (state);
CREATE INDEX relay_jobs_claim ON relay_jobs (owner, topic, created_at, id)
    WHERE state IN ('acknowledged', 'deferred', 'done', 'failing', 'recorded');
CREATE UNIQUE INDEX relay_jobs_token ON relay_jobs (token_hash) WHERE token_hash IS NOT NULL;
CREATE TABLE relay_owners (owner TEXT PRIMARY KEY, lease_until REAL NOT NULL) WITHOUT ROWID;
PRAGMA user_version = 3;
"""


def test_a_version_3_file_is_migrated_with_its_results_and_error_details(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    done = rich_job()  # a result of every kind of value
    failing = make_job(
        2, state=JobState.FAILING, attempts=3, error="work failed", error_detail="boom: 42"
    )
    acknowledged = make_job(3, state=JobState.ACKNOWLEDGED, attempts=1, token_hash="h3")
    conn = sqlite3.connect(path)
    conn.executescript(_VERSION_3)
    for job, owner in ((done, "dead"), (failing, "dead"), (acknowledged, "")):
        row = {**journal_codec.columns(job), "owner": owner, "payload": journal_codec.dumps(job)}
        del row["filter_key"]
        names = ", ".join(row)
        values = ", ".join(f":{name}" for name in row)
        conn.execute(f"INSERT INTO relay_jobs ({names}) VALUES ({values})", row)  # noqa: S608
    conn.commit()
    conn.close()

    async def scenario() -> None:
        journal = SqliteJournal(path, owner="heir")
        try:
            await journal.renew()
            assert await journal.get(done.id) == done
            assert await journal.get(failing.id) == failing
            claimed = await journal.claim(topics=[done.task.topic, failing.task.topic])
            assert sorted(ids(claimed)) == sorted([done.id, failing.id, acknowledged.id])
            assert {job.id: job for job in claimed}[done.id] == done
            delivered = done.advance(JobState.DELIVERED, deliveries=1)
            assert await journal.save(delivered) is True
            assert await journal.get(done.id) == delivered
        finally:
            await journal.close()

    asyncio.run(scenario())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


def test_a_step_writes_the_columns_and_keeps_the_payload(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    job = rich_job().advance(JobState.ACKNOWLEDGED, attempts=1)

    def payload() -> str:
        with sqlite3.connect(path) as conn:
            (text,) = conn.execute("SELECT payload FROM relay_jobs").fetchone()
        conn.close()
        return str(text)

    async def scenario() -> None:
        journal = SqliteJournal(path, owner="a")
        try:
            await journal.renew()
            assert await journal.record(job) is True
            written = payload()
            assert json.loads(written)["v"] == journal_codec.TASK_PAYLOAD_VERSION
            assert "state" not in json.loads(written), "the state lives in its columns"
            done = job.advance(JobState.DONE, result={"answer": 42}, deadline=FAR)
            assert await journal.save(done) is True
            assert payload() == written
            assert await journal.get(job.id) == done
            again = done.advance(
                JobState.ACKNOWLEDGED, attempts=0, task=replace(job.task, business_key="bk-9")
            )
            assert await journal.save(again) is True, "no attempt yet: the task is written"
            assert await journal.get(job.id) == again
            assert payload() != written
        finally:
            await journal.close()

    asyncio.run(scenario())
