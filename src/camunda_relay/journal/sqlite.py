"""The default journal: one SQLite file (one worker pod with a volume, or several processes
on one host).

Durability: WAL mode with ``synchronous=FULL``, so a job is on disk when :meth:`record`
returns and survives ``kill -9`` and, as far as SQLite and the file system promise, a power
loss. Every write runs in a ``BEGIN IMMEDIATE`` transaction, so writers from several
processes queue on the file's write lock (``busy_timeout``) instead of failing mid-way, and a
:meth:`claim` takes its jobs in one statement: two claimers never get the same job.

The connection lives on one private thread; every call runs there, so the event loop never
waits on the disk and the connection is never shared between threads. Writes are committed in
groups: the writes that arrive while a commit is on its way to the disk wait for the next one,
which takes them all in one transaction (each in its own savepoint, so one failing write fails
alone) and one fsync. Every write still returns only once it is committed. The file and its
folders are created, and the schema with them, on the first call. Lease times come from this
host's clock (``time.time()``); processes sharing a file share that clock.

The table keeps the fields needed to list and count jobs in columns and the whole job in
``payload`` (JSON text from :mod:`camunda_relay.journal.codec`); ``PRAGMA user_version``
is the schema version.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from camunda_relay.errors import ConfigurationError
from camunda_relay.journal import codec as journal_codec
from camunda_relay.journal.base import DEFAULT_LEASE, check_owner
from camunda_relay.replies.job import Job, JobState

__all__ = ["SCHEMA_VERSION", "SqliteJournal"]

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
BUSY_TIMEOUT = timedelta(seconds=30)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS relay_jobs (
    id                  TEXT PRIMARY KEY,
    topic               TEXT NOT NULL,
    process_instance_id TEXT NOT NULL,
    business_key        TEXT,
    state               TEXT NOT NULL,
    attempts            INTEGER NOT NULL,
    deliveries          INTEGER NOT NULL,
    error               TEXT,
    deadline            REAL,
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL,
    owner               TEXT NOT NULL,
    lease_until         REAL NOT NULL,
    payload             TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS relay_jobs_state ON relay_jobs (state);
CREATE INDEX IF NOT EXISTS relay_jobs_lease_until ON relay_jobs (lease_until);
"""

# Unfinished: state NOT IN ('delivered', 'failed', 'dropped'), spelled out in each query.
assert {state.value for state in JobState if state.finished} == {"delivered", "failed", "dropped"}

_INSERT = """
INSERT INTO relay_jobs (id, topic, process_instance_id, business_key, state, attempts,
    deliveries, error, deadline, created_at, updated_at, owner, lease_until, payload)
VALUES (:id, :topic, :process_instance_id, :business_key, :state, :attempts,
    :deliveries, :error, :deadline, :created_at, :updated_at, :owner, :lease_until, :payload)
"""
_RECORD = _INSERT + "ON CONFLICT (id) DO NOTHING"
_SAVE = (
    _INSERT
    + """ON CONFLICT (id) DO UPDATE SET
    topic = excluded.topic, process_instance_id = excluded.process_instance_id,
    business_key = excluded.business_key, state = excluded.state,
    attempts = excluded.attempts, deliveries = excluded.deliveries, error = excluded.error,
    deadline = excluded.deadline, created_at = excluded.created_at,
    updated_at = excluded.updated_at, owner = excluded.owner,
    lease_until = excluded.lease_until, payload = excluded.payload
WHERE relay_jobs.owner = excluded.owner OR relay_jobs.lease_until < :now"""
)
_CLAIM = """
UPDATE relay_jobs SET owner = :owner, lease_until = :lease_until
WHERE id IN (
    SELECT id FROM relay_jobs
    WHERE state NOT IN ('delivered', 'failed', 'dropped')
        AND (lease_until < :now OR owner = :owner)
    ORDER BY created_at, id LIMIT :limit
)
RETURNING payload
"""
_UNFINISHED_PAYLOADS = """
SELECT payload FROM relay_jobs WHERE state NOT IN ('delivered', 'failed', 'dropped')
ORDER BY created_at, id
"""
_RENEW = """
UPDATE relay_jobs SET lease_until = ?
WHERE owner = ? AND state NOT IN ('delivered', 'failed', 'dropped')
"""
_RELEASE = """
UPDATE relay_jobs SET lease_until = 0
WHERE owner = ? AND state NOT IN ('delivered', 'failed', 'dropped')
"""


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT.total_seconds(), isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT.total_seconds() * 1000)}")
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            log.warning("journal %s is in %s mode, not WAL", path, mode)
        conn.execute("PRAGMA synchronous = FULL")
        with _write(conn):
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"journal {path} has schema version {version}; this camunda-relay "
                    f"reads version {SCHEMA_VERSION} (a newer version wrote it)"
                )
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on an error): one atomic write."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _commit_group(
    conn: sqlite3.Connection, actions: list[Callable[[sqlite3.Connection], object]]
) -> list[tuple[bool, object]]:
    """Run ``actions`` in one transaction, each in a savepoint: (True, result) or (False, error)."""
    outcomes: list[tuple[bool, object]] = []
    with _write(conn):
        for action in actions:
            conn.execute("SAVEPOINT relay_write")
            try:
                result = action(conn)
            except Exception as error:  # noqa: BLE001 - handed to the caller of this write
                conn.execute("ROLLBACK TO relay_write")
                conn.execute("RELEASE relay_write")
                outcomes.append((False, error))
            else:
                conn.execute("RELEASE relay_write")
                outcomes.append((True, result))
    return outcomes


def _loads(rows: list[tuple[str]]) -> list[Job]:
    return [journal_codec.loads(payload) for (payload,) in rows]


def _oldest_first(jobs: list[Job]) -> list[Job]:
    return sorted(jobs, key=lambda job: (job.created_at, job.id))


class SqliteJournal:
    """Jobs in a SQLite file, leased to their owners (see the module docstring)."""

    durable = True

    def __init__(self, path: str | Path, *, owner: str, lease: timedelta = DEFAULT_LEASE) -> None:
        self.path = Path(path)
        self.owner = check_owner(owner)
        self.lease = lease
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-journal")
        self._conn: sqlite3.Connection | None = None  # touched on the executor's thread only
        self._closed = False
        self._queued: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SqliteJournal({str(self.path)!r}, owner={self.owner!r})"

    # -- plumbing ----------------------------------------------------------------------------

    async def _call(self, action: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError("the journal is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, action)

    def _run(self, action: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = _connect(self.path)
        return action(self._conn)

    async def _write(self, action: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``action`` in a write transaction; return once it is committed."""
        if self._closed:
            raise RuntimeError("the journal is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queued.append((action, future))
        if self._committer is None or self._committer.done():
            self._committer = loop.create_task(self._commit_queued())
        return await future

    async def _commit_queued(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queued:
            group, self._queued = self._queued, []
            actions = [action for action, _ in group]
            try:
                outcomes = await loop.run_in_executor(
                    self._executor, self._run, partial(_commit_group, actions=actions)
                )
            except BaseException as error:
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                if isinstance(error, Exception):
                    continue
                raise
            for (_, future), (ok, value) in zip(group, outcomes, strict=True):
                if future.done():
                    continue  # its caller was cancelled; the write is committed all the same
                if ok:
                    future.set_result(value)
                else:
                    assert isinstance(value, BaseException)
                    future.set_exception(value)

    def _row(self, job: Job) -> dict[str, object]:
        now = time.time()
        return {
            **journal_codec.columns(job),
            "owner": self.owner,
            "lease_until": 0.0 if job.state.finished else now + self.lease.total_seconds(),
            "now": now,
            "payload": journal_codec.dumps(job),
        }

    def _lease_until(self) -> float:
        return time.time() + self.lease.total_seconds()

    # -- the journal -------------------------------------------------------------------------

    async def record(self, job: Job) -> bool:
        row = self._row(job)

        def record(conn: sqlite3.Connection) -> bool:
            return conn.execute(_RECORD, row).rowcount == 1

        return await self._write(record)

    async def save(self, job: Job) -> bool:
        row = self._row(job)

        def save(conn: sqlite3.Connection) -> bool:
            return conn.execute(_SAVE, row).rowcount == 1

        return await self._write(save)

    async def get(self, job_id: str) -> Job | None:
        def get(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT payload FROM relay_jobs WHERE id = ?", (job_id,)).fetchone()
            return row[0] if row is not None else None

        payload = await self._call(get)
        return journal_codec.loads(payload) if payload is not None else None

    async def unfinished(self) -> list[Job]:
        rows = await self._call(lambda conn: conn.execute(_UNFINISHED_PAYLOADS).fetchall())
        return _loads(rows)

    async def jobs(self, *, states: Collection[JobState] | None = None) -> list[Job]:
        wanted = sorted({JobState(state).value for state in states}) if states is not None else []
        query = "SELECT payload FROM relay_jobs"
        if states is not None:
            query += f" WHERE state IN ({', '.join('?' * len(wanted))})" if wanted else " WHERE 0"
        query += " ORDER BY created_at, id"
        rows = await self._call(lambda conn: conn.execute(query, wanted).fetchall())
        return _loads(rows)

    async def claim(self, *, limit: int = 1000) -> list[Job]:
        def claim(conn: sqlite3.Connection) -> list[tuple[str]]:
            now = time.time()
            parameters = {
                "owner": self.owner,
                "lease_until": now + self.lease.total_seconds(),
                "now": now,
                "limit": limit,
            }
            return conn.execute(_CLAIM, parameters).fetchall()

        jobs = _oldest_first(_loads(await self._write(claim)))
        if jobs:
            log.debug("claimed %d journal jobs", len(jobs))
        return jobs

    async def renew(self) -> int:
        def renew(conn: sqlite3.Connection) -> int:
            return conn.execute(_RENEW, (self._lease_until(), self.owner)).rowcount

        return await self._write(renew)

    async def release(self) -> None:
        def release(conn: sqlite3.Connection) -> None:
            conn.execute(_RELEASE, (self.owner,))

        await self._write(release)

    async def counts(self) -> dict[JobState, int]:
        rows = await self._call(
            lambda conn: conn.execute(
                "SELECT state, count(*) FROM relay_jobs GROUP BY state"
            ).fetchall()
        )
        counts = dict.fromkeys(JobState, 0)
        for state, count in rows:
            counts[JobState(state)] = count
        return counts

    async def delete(self, job_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM relay_jobs WHERE id = ?", (job_id,)).rowcount > 0

        return await self._write(delete)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._committer is not None and not self._committer.done():
            await asyncio.wait([self._committer])  # writes already accepted reach the disk

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, close)
        finally:
            self._executor.shutdown(wait=False)
