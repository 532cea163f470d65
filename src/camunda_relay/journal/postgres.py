"""The shared journal: one PostgreSQL table that several worker processes (pods) work from.

Every statement commits on its own (autocommit), so a job is stored, by the database's own
durability, when :meth:`record` returns. Leases use the database's clock (``now()``), so the
workers' clocks need not agree. :meth:`claim` takes its jobs with ``FOR UPDATE SKIP LOCKED``
in one statement: concurrent claimers skip each other's rows and never get the same job. The
schema and the statements are in :mod:`camunda_relay.journal.postgres_schema`; the first
connection creates the tables, or migrates a version-1 table (stop every worker of the old
version first: one left running fails on its next write rather than misread the leases).

One connection per journal object, created on the first call and guarded by an
:class:`asyncio.Lock`; when it breaks (a server restart, a failover) the call reconnects and
runs once more. Every statement is safe to repeat: ``record`` and ``delete`` then report what
the first run did as "already there" / "nothing to delete".

A database that does not answer must not hang a worker. Connecting gives up after
``connect_timeout``, the server cancels a statement after ``statement_timeout``, TCP
keepalives (and ``tcp_user_timeout``) notice a silent peer, and, because a blackholed server
(its packets dropped) answers nothing at all, every call has a deadline of its own
(``call_timeout``, waiting for the lock included): past it the connection is dropped as
broken and :class:`~camunda_relay.errors.JournalUnavailable` raised; the next call connects
afresh. libpq options given in the DSN win over these defaults.

psycopg errors become :class:`~camunda_relay.errors.JournalUnavailable` (connection lost,
timeouts, server shutting down, ...: ``OperationalError`` and ``InterfaceError``) or
:class:`~camunda_relay.errors.JournalError`, naming the operation, the error class and the
SQLSTATE only: a server message may quote a value, and the DSN holds a password. Neither is
ever logged or shown in ``repr``.

Needs psycopg 3 (``pip install 'camunda-relay[postgres]'``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from camunda_relay.errors import ConfigurationError, CorruptJob, JournalError, JournalUnavailable
from camunda_relay.journal import codec as journal_codec
from camunda_relay.journal import postgres_schema as schema
from camunda_relay.journal.base import (
    DEFAULT_LEASE,
    NOBODY,
    UNREADABLE_LINE,
    UnreadableJob,
    Verdict,
    check_owner,
    judge_answer,
    oldest_first,
    wanted_keys,
)
from camunda_relay.journal.postgres_schema import SCHEMA_VERSION
from camunda_relay.replies.job import Job, JobState

__all__ = ["APPLICATION_NAME", "DEFAULT_TABLE", "PostgresJournal", "journal_error"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]
Action = Callable[[Connection], Awaitable[T]]

DEFAULT_TABLE = "relay_jobs"
APPLICATION_NAME = "camunda-relay journal"
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")


def journal_error(error: psycopg.Error, doing: str) -> JournalError:
    """The journal error for a psycopg error: the kind and SQLSTATE, never the server's
    message (it may quote a value)."""
    unavailable = isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)
    cls = JournalUnavailable if unavailable else JournalError
    state = f", SQLSTATE {error.sqlstate}" if error.sqlstate else ""
    return cls(f"PostgreSQL journal: {doing} failed ({type(error).__name__}{state})")


def _job(row: Sequence[Any]) -> Job:
    """A job from its ``payload, answer`` row (psycopg reads ``json`` columns as data)."""
    return journal_codec.from_payload(row[0], journal_codec.loads_answer(row[1]))


def _jobs(rows: list[TupleRow]) -> list[Job]:
    """The jobs of ``id, payload, answer`` rows, read one by one; one that cannot be read is
    left out, named by id in a WARNING (``pending`` lists it once a claim marked it)."""
    jobs: list[Job] = []
    for job_id, *row in rows:
        try:
            jobs.append(_job(row))
        except CorruptJob as error:
            log.warning("journal job %s cannot be read (%s); left out", job_id, error)
    return jobs


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
        connect_timeout: timedelta = timedelta(seconds=5),
        statement_timeout: timedelta = timedelta(seconds=10),
        call_timeout: timedelta = timedelta(seconds=15),
        keepalive: timedelta = timedelta(seconds=30),
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
        idle = max(1, round(keepalive.total_seconds()))
        defaults: dict[str, str | int] = {
            "application_name": APPLICATION_NAME,
            "connect_timeout": max(2, round(connect_timeout.total_seconds())),
            "keepalives": 1,
            "keepalives_idle": idle,
            "keepalives_interval": max(1, idle // 3),
            "keepalives_count": 3,
            "tcp_user_timeout": round(call_timeout.total_seconds() * 1000),
        }
        self._dsn = make_conninfo(dsn, **{k: v for k, v in defaults.items() if k not in options})
        self.owner = check_owner(owner)
        self.lease = lease
        self.table = table
        self.statement_timeout = statement_timeout
        self.call_timeout = call_timeout
        names = {
            "table": sql.Identifier(table),
            "owners": sql.Identifier(f"{table}_owners"),
            "state_index": sql.Identifier(f"{table}_state_idx"),
            "claim_index": sql.Identifier(f"{table}_claim_idx"),
            "expiry_index": sql.Identifier(f"{table}_expiry_idx"),
            "parked": sql.SQL(schema.PARKED_CONDITION),
            "lease_index": sql.Identifier(f"{table}_lease_until_idx"),
            "token_index": sql.Identifier(f"{table}_token_idx"),
            "unfinished": sql.SQL(schema.UNFINISHED_CONDITION),
            "claimable": sql.SQL(schema.CLAIMABLE_CONDITION),
        }

        def composed(statements: tuple[str, ...]) -> list[sql.Composed]:
            return [sql.SQL(statement).format(**names) for statement in statements]

        self._create = composed(schema.CREATE)
        self._migrate = {
            version: composed(statements) for version, statements in schema.MIGRATIONS.items()
        }
        self._sql = {name: sql.SQL(text).format(**names) for name, text in schema.QUERIES.items()}
        self._conn: Connection | None = None
        self._generation = 0  # moves on when a call is abandoned with its connection
        self._abandoned: set[asyncio.Task[Any]] = set()
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresJournal(table={self.table!r}, owner={self.owner!r})"

    @property
    def conninfo(self) -> str:
        """The libpq connection string with this journal's defaults (it may hold a
        password: never log it), for a connection of one's own (the sweep lock)."""
        return self._dsn

    # -- plumbing ----------------------------------------------------------------------------

    async def _connect(self) -> Connection:
        """A new connection with its statement timeout, the schema created or migrated."""
        conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        try:
            async with conn.transaction():
                timeout = f"{round(self.statement_timeout.total_seconds() * 1000)}ms"
                await conn.execute("SELECT set_config('statement_timeout', %s, false)", (timeout,))
                # Serialise the CREATEs of workers starting together on an empty database.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
                await self._upgrade(conn)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _upgrade(self, conn: Connection) -> None:
        cursor = await conn.execute(self._sql["version"], {"table": self.table})
        row = await cursor.fetchone()
        assert row is not None
        version = schema.schema_version(bool(row[0]), row[1])
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"journal table {self.table!r} has schema version {version}; this "
                f"camunda-relay reads version {SCHEMA_VERSION} (a newer version wrote it)"
            )
        if version == SCHEMA_VERSION:
            return
        for statement in self._create if version == 0 else self._migrate[version]:
            await conn.execute(statement)
        if version:
            log.info("journal table %s migrated from schema version %d", self.table, version)

    async def _run(self, doing: str, action: Action[T]) -> T:
        """``action`` on the connection, within :attr:`call_timeout` (see the module
        docstring); psycopg errors mapped to journal errors."""
        if self._closed:
            raise RuntimeError("the journal is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.call_timeout.total_seconds()
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError:
            raise self._late(doing) from None
        try:
            if self._closed:
                raise RuntimeError("the journal is closed")
            attempt = asyncio.ensure_future(self._attempt(doing, action, self._generation))
            try:
                done, _ = await asyncio.wait({attempt}, timeout=max(deadline - loop.time(), 0))
            except BaseException:  # the caller was cancelled: the connection's state is unknown
                self._abandon(attempt)
                raise
            if not done:
                self._abandon(attempt)
                raise self._late(doing)
            return attempt.result()
        finally:
            self._lock.release()

    def _late(self, doing: str) -> JournalUnavailable:
        seconds = self.call_timeout.total_seconds()
        return JournalUnavailable(f"PostgreSQL journal: {doing} got no answer within {seconds}s")

    def _abandon(self, attempt: asyncio.Task[Any]) -> None:
        """Leave a call that overran to finish on its own; it closes its connection, and the
        next call connects afresh."""
        log.warning("journal database did not answer in time; dropping the connection")
        self._generation += 1
        self._conn = None
        attempt.cancel()
        self._abandoned.add(attempt)
        attempt.add_done_callback(self._abandoned.discard)
        attempt.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def _attempt(self, doing: str, action: Action[T], generation: int) -> T:
        used: list[Connection] = []

        async def connection() -> Connection:
            conn = self._conn
            if conn is None or conn.closed:
                self._conn = None
                try:
                    conn = await self._connect()
                except psycopg.Error as error:
                    raise journal_error(error, "connecting") from None
                if generation == self._generation:
                    self._conn = conn
            used.append(conn)
            return conn

        try:
            conn = await connection()
            try:
                return await action(conn)
            except psycopg.OperationalError:
                if not (conn.broken or conn.closed):
                    raise
                log.warning("journal connection to PostgreSQL lost; reconnecting once")
                self._conn = None
                await conn.close()
            return await action(await connection())
        except psycopg.Error as error:
            raise journal_error(error, doing) from None
        finally:
            if generation != self._generation:  # abandoned: nobody else uses its connections
                for conn in used:
                    await conn.close()

    async def _execute(self, query: str, parameters: dict[str, Any]) -> list[TupleRow]:
        async def execute(conn: Connection) -> list[TupleRow]:
            cursor = await conn.execute(self._sql[query], parameters)
            return await cursor.fetchall() if cursor.description is not None else []

        return await self._run(query, execute)

    async def _rowcount(self, query: str, parameters: dict[str, Any]) -> int:
        async def execute(conn: Connection) -> int:
            return (await conn.execute(self._sql[query], parameters)).rowcount

        return await self._run(query, execute)

    def _row(self, job: Job) -> dict[str, Any]:
        return {
            **journal_codec.columns(job),
            **self._mine(),
            "owner": NOBODY if job.state.finished else self.owner,
            "payload": journal_codec.dumps(job),
            "knows": job.answer is not None,
        }

    def _mine(self, **parameters: object) -> dict[str, Any]:
        return {"me": self.owner, "lease": self.lease, **parameters}

    # -- the journal -------------------------------------------------------------------------

    async def record(self, job: Job) -> bool:
        return await self._rowcount("record", self._row(job)) == 1

    async def save(self, job: Job, *, synced: bool = True) -> bool:
        return await self._rowcount("save" if synced else "save_unsynced", self._row(job)) == 1

    async def park(self, job: Job) -> Job | None:
        row = self._row(job)

        async def park(conn: Connection) -> TupleRow | None:
            async with conn.transaction():
                parked = await (await conn.execute(self._sql["park"], row)).fetchone()
                if parked is not None:
                    return parked
                recorded = await conn.execute(self._sql["record"], {**row, "owner": NOBODY})
                if recorded.rowcount == 0:
                    return None  # another owner's
                return await (await conn.execute(self._sql["get"], row)).fetchone()

        stored = await self._run("park", park)
        return _job(stored) if stored is not None else None

    async def get(self, job_id: str) -> Job | None:
        rows = await self._execute("get", {"id": job_id})
        return _job(rows[0]) if rows else None

    async def unfinished(self) -> list[Job]:
        return _jobs(await self._execute("unfinished", {}))

    async def unfinished_instances(self) -> set[str]:
        rows = await self._execute("unfinished_instances", {})
        return {instance for (instance,) in rows}

    async def jobs(self, *, states: Collection[JobState] | None = None) -> list[Job]:
        if states is None:
            rows = await self._execute("jobs", {})
        else:
            wanted = sorted({JobState(state).value for state in states})
            rows = await self._execute("jobs_in", {"states": wanted})
        return _jobs(rows)

    async def claim(
        self,
        *,
        topics: Collection[str],
        limit: int = 100,
        filters: Mapping[str, str] | None = None,
        running: Collection[str] = (),
    ) -> list[Job]:
        wanted = wanted_keys(topics, filters)
        if not wanted or limit <= 0:
            return []
        parameters = self._mine(
            topics=[topic for topic, _ in wanted],
            keys=[key for _, key in wanted],
            running=sorted(set(running)),
            limit=limit,
        )

        async def claim(conn: Connection) -> tuple[list[Job], list[tuple[str, str]]]:
            # Rows are read one by one inside the claim's transaction: an unreadable one is
            # given back and marked in the same commit, and the others run.
            jobs: list[Job] = []
            bad: list[tuple[str, str]] = []
            async with conn.transaction():
                rows = await (await conn.execute(self._sql["claim"], parameters)).fetchall()
                for job_id, *row in rows:
                    try:
                        jobs.append(_job(row))
                    except CorruptJob as error:
                        bad.append((str(job_id), str(error)))
                        marked = {"id": job_id, "reason": str(error), **parameters}
                        await conn.execute(self._sql["mark_unreadable"], marked)
                await conn.execute(self._sql["prune_owners"], parameters)
            return jobs, bad

        jobs, bad = await self._run("claim", claim)
        for job_id, reason in bad:
            log.error(UNREADABLE_LINE, job_id, reason)
        if jobs:
            log.debug("claimed %d journal jobs", len(jobs))
        return oldest_first(jobs)

    async def unreadable(self) -> list[UnreadableJob]:
        rows = await self._execute("unreadable", {})
        return [UnreadableJob(*(str(value) for value in row)) for row in rows]

    async def filter_keys(self, topics: Collection[str]) -> dict[tuple[str, str], int]:
        rows = await self._execute("filter_keys", {"topics": sorted(set(topics))})
        return {(str(topic), str(key)): int(count) for topic, key, count in rows}

    async def renew(self) -> None:
        await self._rowcount("renew", self._mine())

    async def release(self, job_id: str | None = None) -> None:
        if job_id is None:
            await self._rowcount("release_lease", self._mine())
        else:
            await self._rowcount("release_job", self._mine(id=job_id))

    async def answer(self, token_hash: str, answer: str) -> Verdict:
        parameters = {"hash": token_hash, "answer": answer}

        async def keep(conn: Connection) -> Verdict:
            async with conn.transaction():
                cursor = await conn.execute(self._sql["answer_find"], parameters)
                row = await cursor.fetchone()
                if row is None:
                    return Verdict.UNKNOWN
                now = await (
                    await conn.execute("SELECT extract(epoch FROM now())::float8")
                ).fetchone()
                assert now is not None
                state, stored, deadline = row
                verdict = judge_answer(JobState(state), stored, deadline, float(now[0]), answer)
                if verdict is Verdict.ACCEPTED and stored is None:
                    await conn.execute(self._sql["answer_set"], parameters)
            return verdict

        return await self._run("answer", keep)

    async def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for state, count in await self._execute("counts", {}):
            counts[JobState(state)] = int(count)
        return counts

    async def delete(self, job_id: str) -> bool:
        return await self._rowcount("delete", {"id": job_id}) > 0

    async def prune(self, *, finished_before: float) -> int:
        return await self._rowcount("prune_finished", {"before": finished_before})

    async def close(self) -> None:
        self._closed = True
        for attempt in list(self._abandoned):
            attempt.cancel()  # interrupted again, psycopg drops the connection at once
        if self._abandoned:
            await asyncio.wait(set(self._abandoned), timeout=self.call_timeout.total_seconds())
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()
