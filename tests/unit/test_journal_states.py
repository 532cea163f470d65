"""A new finished job state needs no journal migration: the journals' partial indexes (the
claim index, in SQLite and PostgreSQL) list the *unfinished* states only, and those are the
ones journals written before ``cancelled`` existed list. A journal file or table made then is
read, written and claimed from as it is, at the same schema version."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from camunda_relay.journal import postgres_schema, sqlite_schema
from camunda_relay.journal.postgres import PostgresJournal
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.job import UNFINISHED, JobState, sql_states
from tests.support.journals import TOPICS, fresh_database, ids, make_job, unique_table
from tests.support.postgres import PostgresServer

# The unfinished states as every journal's claim index has listed them since schema version
# 2 (SQLite) / 2 (PostgreSQL): pinned, so that a change to them is a schema change, seen.
PINNED = "'acknowledged', 'deferred', 'done', 'failing', 'recorded'"


def test_the_unfinished_states_are_the_ones_existing_indexes_list() -> None:
    assert sql_states(UNFINISHED) == PINNED
    assert JobState.CANCELLED.finished
    assert sqlite_schema.SCHEMA_VERSION == 5
    assert postgres_schema.SCHEMA_VERSION == 4


def test_a_sqlite_journal_made_before_cancelled_takes_it_without_a_migration(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite3"
    old_index = f"WHERE state IN ({PINNED})"

    async def scenario() -> list[str]:
        journal = SqliteJournal(path, owner="worker", lease=timedelta(minutes=5))
        try:
            await journal.record(make_job(1, state=JobState.ACKNOWLEDGED))
            await journal.record(make_job(2, state=JobState.ACKNOWLEDGED))
            await journal.save(make_job(1, state=JobState.CANCELLED))
        finally:
            await journal.close()
        again = SqliteJournal(path, owner="heir", lease=timedelta(minutes=5))
        try:
            return ids(await again.claim(topics=TOPICS))  # INDEXED BY: the index or an error
        finally:
            await again.close()

    async def made_before() -> None:  # a file as the previous release made it
        journal = SqliteJournal(path, owner="worker", lease=timedelta(seconds=-1))
        try:
            await journal.renew()
        finally:
            await journal.close()

    asyncio.run(made_before())
    with sqlite3.connect(path) as conn:
        (index,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'relay_jobs_claim'"
        ).fetchone()
    conn.close()
    assert old_index in " ".join(index.split())
    assert asyncio.run(scenario()) == ["task-2"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (5,)
    conn.close()


@pytest.mark.postgres
def test_a_postgres_journal_takes_cancelled_without_a_migration(
    postgres_server: PostgresServer,
) -> None:
    dsn = fresh_database(postgres_server, "journal_states")
    table = unique_table()

    async def scenario() -> list[str]:
        worker = PostgresJournal(dsn, owner="worker", table=table, lease=timedelta(seconds=-1))
        heir = PostgresJournal(dsn, owner="heir", table=table)
        try:
            await worker.record(make_job(1, state=JobState.ACKNOWLEDGED))
            await worker.record(make_job(2, state=JobState.ACKNOWLEDGED))
            await worker.save(make_job(1, state=JobState.CANCELLED))
            return ids(await heir.claim(topics=TOPICS))
        finally:
            await worker.close()
            await heir.close()

    assert asyncio.run(scenario()) == ["task-2"]
    with psycopg.connect(dsn) as conn:
        (definition,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (f"{table}_claim_idx",)
        ).fetchone() or (None,)
        (comment,) = conn.execute(
            "SELECT obj_description(to_regclass(%s), 'pg_class')", (table,)
        ).fetchone() or (None,)
    assert definition is not None
    for state in UNFINISHED:
        assert f"'{state.value}'" in definition
    assert "cancelled" not in definition
    assert comment == "camunda-relay journal, schema version 4"
