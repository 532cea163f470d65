"""The shared journal: one PostgreSQL table that several worker processes (pods) work from.

Every statement commits on its own (autocommit), so a job is stored, by the database's own
durability, when :meth:`record` returns. Leases use the database's clock (``now()``), so the
workers' clocks need not agree. :meth:`claim` takes its jobs with ``FOR UPDATE SKIP LOCKED``
in one statement: concurrent claimers skip each other's rows and never get the same job.

One connection per journal object, created (with the table, if missing) on the first call
and guarded by an :class:`asyncio.Lock`; when it breaks (a server restart, a failover) the
call reconnects and runs once more. Every statement is safe to repeat: ``record`` and
``delete`` then report what the first run did as "already there" / "nothing to delete".

Needs psycopg 3 (``pip install 'camunda-relay[postgres]'``). The DSN holds a password: it is
never logged or shown in ``repr``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from camunda_relay.errors import ConfigurationError
from camunda_relay.journal import codec as journal_codec
from camunda_relay.journal.base import DEFAULT_LEASE, check_owner
from camunda_relay.replies.job import Job, JobState

__all__ = ["DEFAULT_TABLE", "PostgresJournal"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]

DEFAULT_TABLE = "relay_jobs"
APPLICATION_NAME = "camunda-relay journal"
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {table} (
    id                  text PRIMARY KEY,
    topic               text NOT NULL,
    process_instance_id text NOT NULL,
    business_key        text,
    state               text NOT NULL,
    attempts            integer NOT NULL,
    deliveries          integer NOT NULL,
    error               text,
    deadline            timestamptz,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    owner               text NOT NULL,
    lease_until         timestamptz NOT NULL,
    payload             json NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS {state_index} ON {table} (state)",
    "CREATE INDEX IF NOT EXISTS {lease_index} ON {table} (lease_until)",
)

_UNFINISHED = "state NOT IN ('delivered', 'failed', 'dropped')"
assert {state.value for state in JobState if state.finished} == {"delivered", "failed", "dropped"}

_INSERT = """
INSERT INTO {table} (id, topic, process_instance_id, business_key, state, attempts,
    deliveries, error, deadline, created_at, updated_at, owner, lease_until, payload)
VALUES (%(id)s, %(topic)s, %(process_instance_id)s, %(business_key)s, %(state)s,
    %(attempts)s, %(deliveries)s, %(error)s, to_timestamp(%(deadline)s),
    to_timestamp(%(created_at)s), to_timestamp(%(updated_at)s), %(owner)s,
    CASE WHEN %(finished)s THEN timestamptz 'epoch' ELSE now() + %(lease)s END,
    %(payload)s::json)
"""
_QUERIES = {
    "record": _INSERT + "ON CONFLICT (id) DO NOTHING",
    "save": _INSERT
    + """ON CONFLICT (id) DO UPDATE SET
    topic = excluded.topic, process_instance_id = excluded.process_instance_id,
    business_key = excluded.business_key, state = excluded.state,
    attempts = excluded.attempts, deliveries = excluded.deliveries, error = excluded.error,
    deadline = excluded.deadline, created_at = excluded.created_at,
    updated_at = excluded.updated_at, owner = excluded.owner,
    lease_until = excluded.lease_until, payload = excluded.payload
WHERE {table}.owner = excluded.owner OR {table}.lease_until < now()""",
    "get": "SELECT payload FROM {table} WHERE id = %(id)s",
    "unfinished": "SELECT payload FROM {table} WHERE {unfinished} ORDER BY created_at, id",
    "jobs": "SELECT payload FROM {table} ORDER BY created_at, id",
    "jobs_in": "SELECT payload FROM {table} WHERE state = ANY(%(states)s) ORDER BY created_at, id",
    # MATERIALIZED: the locking sub-select runs exactly once, so LIMIT holds.
    "claim": """
WITH picked AS MATERIALIZED (
    SELECT id FROM {table}
    WHERE {unfinished} AND (lease_until < now() OR owner = %(owner)s)
    ORDER BY created_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {table} AS job SET owner = %(owner)s, lease_until = now() + %(lease)s
FROM picked WHERE job.id = picked.id
RETURNING job.payload""",
    "renew": """UPDATE {table} SET lease_until = now() + %(lease)s
WHERE owner = %(owner)s AND {unfinished}""",
    "release": """UPDATE {table} SET lease_until = timestamptz 'epoch'
WHERE owner = %(owner)s AND {unfinished}""",
    "counts": "SELECT state, count(*) FROM {table} GROUP BY state",
    "delete": "DELETE FROM {table} WHERE id = %(id)s",
}


def _oldest_first(jobs: list[Job]) -> list[Job]:
    return sorted(jobs, key=lambda job: (job.created_at, job.id))


class PostgresJournal:
    """Jobs in a PostgreSQL table, leased to their owners (see the module docstring)."""

    durable = True

    def __init__(
        self,
        dsn: str,
        *,
        owner: str,
        lease: timedelta = DEFAULT_LEASE,
        table: str = DEFAULT_TABLE,
    ) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigurationError(
                f"journal table name {table!r} must be 1-48 lowercase letters, digits or "
                "underscores, not starting with a digit"
            )
        try:
            options = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:
            raise ConfigurationError("the journal's PostgreSQL DSN cannot be parsed") from None
        if "application_name" not in options:
            dsn = make_conninfo(dsn, application_name=APPLICATION_NAME)
        self._dsn = dsn
        self.owner = check_owner(owner)
        self.lease = lease
        self.table = table
        names = {
            "table": sql.Identifier(table),
            "state_index": sql.Identifier(f"{table}_state_idx"),
            "lease_index": sql.Identifier(f"{table}_lease_until_idx"),
            "unfinished": sql.SQL(_UNFINISHED),
        }
        self._schema = [sql.SQL(statement).format(**names) for statement in _SCHEMA]
        self._sql = {name: sql.SQL(text).format(**names) for name, text in _QUERIES.items()}
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresJournal(table={self.table!r}, owner={self.owner!r})"

    # -- plumbing ----------------------------------------------------------------------------

    async def _connect(self) -> Connection:
        conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        try:
            async with conn.transaction():
                # Serialise the CREATEs of workers starting together on an empty database.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
                for statement in self._schema:
                    await conn.execute(statement)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _run(self, action: Callable[[Connection], Awaitable[T]]) -> T:
        async with self._lock:
            if self._closed:
                raise RuntimeError("the journal is closed")
            if self._conn is None or self._conn.closed:
                self._conn = await self._connect()
            conn = self._conn
            try:
                return await action(conn)
            except psycopg.OperationalError:
                if not (conn.broken or conn.closed):
                    raise
                log.warning("journal connection to PostgreSQL lost; reconnecting once")
                self._conn = None
                await conn.close()
            self._conn = await self._connect()
            return await action(self._conn)

    async def _execute(self, query: str, parameters: dict[str, Any]) -> list[TupleRow]:
        async def execute(conn: Connection) -> list[TupleRow]:
            cursor = await conn.execute(self._sql[query], parameters)
            return await cursor.fetchall() if cursor.description is not None else []

        return await self._run(execute)

    async def _rowcount(self, query: str, parameters: dict[str, Any]) -> int:
        async def execute(conn: Connection) -> int:
            return (await conn.execute(self._sql[query], parameters)).rowcount

        return await self._run(execute)

    def _row(self, job: Job) -> dict[str, Any]:
        return {
            **journal_codec.columns(job),
            "owner": self.owner,
            "lease": self.lease,
            "finished": job.state.finished,
            "payload": journal_codec.dumps(job),
        }

    def _mine(self, **parameters: object) -> dict[str, Any]:
        return {"owner": self.owner, "lease": self.lease, **parameters}

    # -- the journal -------------------------------------------------------------------------

    async def record(self, job: Job) -> bool:
        return await self._rowcount("record", self._row(job)) == 1

    async def save(self, job: Job) -> bool:
        return await self._rowcount("save", self._row(job)) == 1

    async def get(self, job_id: str) -> Job | None:
        rows = await self._execute("get", {"id": job_id})
        return journal_codec.from_payload(rows[0][0]) if rows else None

    async def unfinished(self) -> list[Job]:
        rows = await self._execute("unfinished", {})
        return [journal_codec.from_payload(payload) for (payload,) in rows]

    async def jobs(self, *, states: Collection[JobState] | None = None) -> list[Job]:
        if states is None:
            rows = await self._execute("jobs", {})
        else:
            wanted = sorted({JobState(state).value for state in states})
            rows = await self._execute("jobs_in", {"states": wanted})
        return [journal_codec.from_payload(payload) for (payload,) in rows]

    async def claim(self, *, limit: int = 1000) -> list[Job]:
        rows = await self._execute("claim", self._mine(limit=limit))
        jobs = _oldest_first([journal_codec.from_payload(payload) for (payload,) in rows])
        if jobs:
            log.debug("claimed %d journal jobs", len(jobs))
        return jobs

    async def renew(self) -> int:
        return await self._rowcount("renew", self._mine())

    async def release(self) -> None:
        await self._rowcount("release", self._mine())

    async def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for state, count in await self._execute("counts", {}):
            counts[JobState(state)] = int(count)
        return counts

    async def delete(self, job_id: str) -> bool:
        return await self._rowcount("delete", {"id": job_id}) > 0

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()
