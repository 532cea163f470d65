"""The SQLite journal's claim beside its contract: parked deferred jobs cost a claim nothing
(the claim index leaves them out, the expiry index has them by deadline), and a version-4
file is migrated to the fetch-filter key, the unreadable mark and those indexes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from camunda_relay.journal import codec as journal_codec
from camunda_relay.journal import sqlite_schema
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.job import JobState
from tests.support.journals import TOPICS, ids, make_job

FAR = 4_000_000_000.0


def _claim_steps(path: Path) -> int:
    """The SQLite VM steps of one claim (in a transaction rolled back): a count that does
    not depend on the machine's speed."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    parameters = {
        "me": "heir",
        "now": 1_800_000_000.0,
        "wanted": json.dumps([[TOPICS[0], ""]]),
        "running": "[]",
        "limit": 100,
    }
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.set_progress_handler(count, 10)
        claimed = conn.execute(sqlite_schema.CLAIM, parameters).fetchall()
        conn.set_progress_handler(None, 0)
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert [row[0] for row in claimed] == ["task-1", "task-2"]
    return steps


def _journal_with_parked(path: Path, parked: int) -> None:
    """Two claimable jobs (one recorded, one deferred past its deadline) and ``parked``
    deferred jobs waiting for their answer, all held by nobody."""

    async def fill() -> None:
        journal = SqliteJournal(path, owner="gone")
        try:
            await journal.record(make_job(1))
            await journal.record(make_job(2, state=JobState.DEFERRED, deadline=1.0))
            for number in range(3, parked + 3):
                await journal.record(make_job(number, state=JobState.DEFERRED, deadline=FAR))
        finally:
            await journal.close()

    asyncio.run(fill())
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE relay_jobs SET owner = ''")
    conn.close()


def test_parked_deferred_jobs_cost_a_claim_nothing(tmp_path: Path) -> None:
    """The same claim over 10 and over 2,000 parked jobs takes the same steps (before the
    partial indexes, each parked job was read and filtered out, inside the write lock)."""
    few, many = tmp_path / "few.sqlite3", tmp_path / "many.sqlite3"
    _journal_with_parked(few, 10)
    _journal_with_parked(many, 2_000)
    assert _claim_steps(many) <= _claim_steps(few) + 5


def test_the_expiry_index_holds_only_parked_jobs(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    _journal_with_parked(path, 3)
    with sqlite3.connect(path) as conn:
        query = "SELECT count(*) FROM relay_jobs INDEXED BY {} WHERE {}"
        claim = conn.execute(query.format("relay_jobs_claim", sqlite_schema._CLAIMABLE))
        expiry = conn.execute(query.format("relay_jobs_expiry", sqlite_schema._PARKED))
        counts = (claim.fetchone(), expiry.fetchone())
    conn.close()
    assert counts == ((1,), (4,))


# The layout of schema version 4 (no filter key, no unreadable mark, parked jobs in the
# claim index, no expiry index).
_VERSION_4 = """
CREATE TABLE relay_jobs (
    id TEXT PRIMARY KEY, topic TEXT NOT NULL, process_instance_id TEXT NOT NULL,
    business_key TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL,
    deliveries INTEGER NOT NULL, error TEXT, deadline REAL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, owner TEXT NOT NULL, payload TEXT NOT NULL, token_hash TEXT,
    answer TEXT, error_detail TEXT, result TEXT
);
CREATE INDEX relay_jobs_state ON relay_jobs (state);
CREATE INDEX relay_jobs_claim ON relay_jobs (owner, topic, created_at, id)
    WHERE state IN ('acknowledged', 'deferred', 'done', 'failing', 'recorded');
CREATE UNIQUE INDEX relay_jobs_token ON relay_jobs (token_hash) WHERE token_hash IS NOT NULL;
CREATE TABLE relay_owners (owner TEXT PRIMARY KEY, lease_until REAL NOT NULL) WITHOUT ROWID;
PRAGMA user_version = 4;
"""


def test_a_version_4_file_is_migrated(tmp_path: Path) -> None:
    """Its jobs were taken under no fetch filters: key ''; the indexes are rebuilt."""
    path = tmp_path / "journal.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(_VERSION_4)
    jobs = [
        make_job(1, state=JobState.ACKNOWLEDGED, attempts=1),
        make_job(2, state=JobState.DEFERRED, deadline=FAR, token_hash="h2"),
        make_job(3, state=JobState.DEFERRED, deadline=1.0, token_hash="h3"),
    ]
    for job in jobs:
        row = {
            **journal_codec.columns(job),
            **journal_codec.values(job),
            "owner": "",
            "payload": journal_codec.dumps_task(job),
        }
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
            assert await journal.claim(topics=TOPICS, filters={TOPICS[0]: "k"}) == []
            claimed = await journal.claim(topics=TOPICS)
            assert ids(claimed) == ["task-1", "task-3"], "task-2 waits for its answer"
            assert claimed[0] == jobs[0]
            assert await journal.filter_keys(TOPICS) == {(TOPICS[0], ""): 3}
        finally:
            await journal.close()

    asyncio.run(scenario())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (sqlite_schema.SCHEMA_VERSION,)
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(relay_jobs)")}
        assert {"relay_jobs_claim", "relay_jobs_expiry", "relay_jobs_token"} <= indexes
    conn.close()
