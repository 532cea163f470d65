"""The default journal: one SQLite file (one worker pod with a volume, or several processes on one
host).

Durability: WAL mode with ``synchronous=FULL``, so a job is on disk when :meth:`record` returns
and survives ``kill -9`` and, as far as SQLite and the file system promise, a power loss. A
:meth:`save` with ``synced=False`` is committed with ``synchronous=NORMAL``: in the ``-wal``,
seen by every reader and kept at ``kill -9``, but not fsync'd until the next synced commit (or
checkpoint) of the file, which keeps it too: the ``-wal`` is written in order, so a power loss
may lose it, never a commit before it. Every write runs in a ``BEGIN IMMEDIATE`` transaction,
so writers from several processes queue on the file's write lock (``busy_timeout``) instead of
failing mid-way, and a :meth:`claim` takes its jobs in one statement: two claimers never get
the same job.

The connection lives on one private thread; every call runs there, so the event loop never
waits on the disk and the connection is never shared between threads. Writes are committed in
groups: the writes that arrive while a commit is on its way to the disk wait for the next one,
which takes them all in one transaction (each in its own savepoint, so one failing write fails
alone) and one fsync (none when no write of the group asks to be synced). Every write still
returns only once it is committed. The file and its folders are created, and the schema with
them (or a version-1 file migrated), on the first call. Lease times come from the journal's
clock (``clock.wall()``, the host's clock by default); processes sharing a file share that
clock. The schema and the statements are in :mod:`camunda_relay.journal.sqlite_schema`.

The file (and SQLite's ``-wal``/``-shm`` beside it, which take its mode) is created ``0600`` in
folders created ``0700``: it holds the tasks' variables. Opening it runs ``PRAGMA
quick_check``: a damaged page is refused then, with one line, not at every job. A file that is
empty (schema version 0: emptied, replaced, its ``-wal`` lost) is a WARNING naming it; one made
where there was none is an INFO line (a first start; a journal deleted whole is told by the
orphans that the sweep run at once then reports).

SQLite errors become :class:`~camunda_relay.errors.JournalUnavailable` when the file is busy,
locked, cannot be opened or the disk failed (worth retrying), else
:class:`~camunda_relay.errors.JournalError` (:func:`journal_error`): a damaged file or one that
is not SQLite, a folder, a place where no file can be created, are not retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from camunda_relay.clock import SYSTEM, Clock
from camunda_relay.errors import ConfigurationError, JournalError, JournalUnavailable
from camunda_relay.files import private_file
from camunda_relay.journal import codec as journal_codec
from camunda_relay.journal import sqlite_schema as schema
from camunda_relay.journal.base import (
    DEFAULT_LEASE,
    NOBODY,
    Verdict,
    check_owner,
    judge_answer,
    oldest_first,
)
from camunda_relay.journal.sqlite_schema import SCHEMA_VERSION
from camunda_relay.replies.job import Job, JobState

__all__ = ["BUSY_TIMEOUT", "SCHEMA_VERSION", "SqliteJournal", "journal_error"]

log = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT = timedelta(seconds=30)

# Primary result codes of a file that is busy, locked, unreachable or failing: try later.
_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


# A file that is not a SQLite database, or one with a damaged page: refused, not retried.
_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def journal_error(error: sqlite3.Error, path: Path) -> JournalError:
    """The journal error for a SQLite error (SQLite's messages hold no bound values)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _DAMAGED:
        return _damaged(path, str(error))
    unavailable = code is not None and code & 0xFF in _UNAVAILABLE
    cls = JournalUnavailable if unavailable else JournalError
    return cls(f"SQLite journal {path}: {error}")


def _damaged(path: Path, problem: str) -> JournalError:
    return JournalError(
        f"SQLite journal {path} is damaged or not a journal ({problem}): move it away, or "
        "restore it from a backup"
    )


def _mapped(error: BaseException, path: Path) -> BaseException:
    return journal_error(error, path) if isinstance(error, sqlite3.Error) else error


def _prepare(path: Path) -> None:
    """The file, created ``0600`` in ``0700`` folders when missing; a folder, or a place
    where no file can be made, is refused with one line."""
    if path.is_dir():
        raise JournalError(f"SQLite journal {path} is a folder, not a file")
    try:
        private_file(path)
    except OSError as error:
        raise JournalError(
            f"SQLite journal {path} cannot be created ({error.strerror}: {error.filename})"
        ) from None


class _Connection(sqlite3.Connection):
    """The journal's connection, which remembers its ``synchronous`` setting."""

    synced = True  # FULL, as opened


def _connect(path: Path, busy_timeout: timedelta) -> sqlite3.Connection:
    # No file and no -wal beside it: a first start (or a journal deleted whole, which the
    # sweep that runs at once reports by its orphans). Anything else without a schema lost.
    made_here = not path.exists() and not path.with_name(f"{path.name}-wal").exists()
    _prepare(path)
    conn = sqlite3.connect(
        path, timeout=busy_timeout.total_seconds(), isolation_level=None, factory=_Connection
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout.total_seconds() * 1000)}")
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            log.warning("journal %s is in %s mode, not WAL", path, mode)
        conn.execute("PRAGMA synchronous = FULL")
        (verdict,) = conn.execute("PRAGMA quick_check(1)").fetchone()
        if verdict != "ok":
            raise _damaged(path, "quick_check: " + " ".join(str(verdict).split()))
        with _write(conn):
            _upgrade(conn, path, made_here=made_here)
    except BaseException:
        conn.close()
        raise
    return conn


def _upgrade(conn: sqlite3.Connection, path: Path, *, made_here: bool) -> None:
    """Create the schema in a new file, or migrate an older one (inside a write)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"journal {path} has schema version {version}; this camunda-relay "
            f"reads version {SCHEMA_VERSION} (a newer version wrote it)"
        )
    if version == SCHEMA_VERSION:
        return
    if version == 0 and made_here:
        log.info("journal %s created", path)
    elif version == 0:
        log.warning(
            "journal %s is new or empty: if this worker had unfinished reply jobs, they are "
            "lost (a deleted, emptied or replaced file; a -wal file left behind); the "
            "reconciler looks for instances waiting for a reply at once",
            path,
        )
    script = schema.CREATE if version == 0 else schema.MIGRATIONS[version]
    for statement in schema.statements(script):
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    if version:
        log.info("journal %s migrated from schema version %d to %d", path, version, SCHEMA_VERSION)


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on an error): one atomic write."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.warning("rolling back a failed journal write failed too")
        raise


def _commit_group(
    conn: sqlite3.Connection,
    actions: list[Callable[[sqlite3.Connection], object]],
    *,
    synced: bool = True,
) -> list[tuple[bool, object]]:
    """Run ``actions`` in one transaction, each in a savepoint: (True, result) or (False, error).

    ``synced``: the commit waits for its fsync (``synchronous = FULL``); else it is written to
    the ``-wal`` without one (``NORMAL``), and the next synced commit makes it durable with
    its own (the ``-wal`` is written in order)."""
    outcomes: list[tuple[bool, object]] = []
    if getattr(conn, "synced", True) is not synced:
        conn.execute(f"PRAGMA synchronous = {'FULL' if synced else 'NORMAL'}")
        if isinstance(conn, _Connection):
            conn.synced = synced
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


_Queued = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", bool]
"""A write waiting for the next commit: its action, its caller's future, whether it is synced."""


def _loads(rows: list[tuple[str, str | None]]) -> list[Job]:
    return [journal_codec.loads(payload, answer) for (payload, answer) in rows]


class SqliteJournal:
    """Jobs in a SQLite file, leased to their owners (see the module docstring)."""

    durable = True

    def __init__(
        self,
        path: str | Path,
        *,
        owner: str,
        lease: timedelta = DEFAULT_LEASE,
        clock: Clock = SYSTEM,
        busy_timeout: timedelta = BUSY_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self.owner = check_owner(owner)
        self.lease = lease
        self.clock = clock
        self.busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-journal")
        self._conn: sqlite3.Connection | None = None  # touched on the executor's thread only
        self._closed = False
        self._queued: list[_Queued] = []
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
        try:
            if self._conn is None:
                self._conn = _connect(self.path, self.busy_timeout)
            return action(self._conn)
        except sqlite3.Error as error:
            raise journal_error(error, self.path) from error

    async def _write(self, action: Callable[[sqlite3.Connection], T], *, synced: bool = True) -> T:
        """Run ``action`` in a write transaction; return once it is committed (and, when
        ``synced``, on the disk: a group with one synced write is synced whole)."""
        if self._closed:
            raise RuntimeError("the journal is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queued.append((action, future, synced))
        if self._committer is None or self._committer.done():
            self._committer = loop.create_task(self._commit_queued())
        return await future

    async def _commit_queued(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queued:
            group, self._queued = self._queued, []
            actions = [action for action, _, _ in group]
            synced = any(synced for _, _, synced in group)
            try:
                outcomes = await loop.run_in_executor(
                    self._executor,
                    self._run,
                    partial(_commit_group, actions=actions, synced=synced),
                )
            except BaseException as error:
                for _, future, _ in group:
                    if not future.done():
                        future.set_exception(error)
                if isinstance(error, Exception):
                    continue
                raise
            for (_, future, _), (ok, value) in zip(group, outcomes, strict=True):
                if future.done():
                    continue  # its caller was cancelled; the write is committed all the same
                if ok:
                    future.set_result(value)
                else:
                    assert isinstance(value, BaseException)
                    future.set_exception(_mapped(value, self.path))

    def _times(self) -> dict[str, float]:
        """``now`` and this owner's ``lease_until`` from the clock (read at commit time)."""
        now = self.clock.wall()
        return {"now": now, "lease_until": now + self.lease.total_seconds()}

    def _row(self, job: Job) -> dict[str, object]:
        return {
            **journal_codec.columns(job),
            "me": self.owner,
            "owner": NOBODY if job.state.finished else self.owner,
            "payload": journal_codec.dumps(job),
        }

    def _store(self, statement: str, job: Job) -> Callable[[sqlite3.Connection], bool]:
        """The write of ``job`` by ``statement`` (RECORD or SAVE)."""
        row = self._row(job)

        def store(conn: sqlite3.Connection) -> bool:
            return bool(conn.execute(statement, {**row, **self._times()}).rowcount == 1)

        return store

    # -- the journal -------------------------------------------------------------------------

    async def record(self, job: Job) -> bool:
        return await self._write(self._store(schema.RECORD, job))

    async def save(self, job: Job, *, synced: bool = True) -> bool:
        return await self._write(self._store(schema.SAVE, job), synced=synced)

    async def get(self, job_id: str) -> Job | None:
        def get(conn: sqlite3.Connection) -> tuple[str, str | None] | None:
            query = "SELECT payload, answer FROM relay_jobs WHERE id = ?"
            row: tuple[str, str | None] | None = conn.execute(query, (job_id,)).fetchone()
            return row

        row = await self._call(get)
        return journal_codec.loads(*row) if row is not None else None

    async def unfinished(self) -> list[Job]:
        rows = await self._call(lambda conn: conn.execute(schema.UNFINISHED_PAYLOADS).fetchall())
        return _loads(rows)

    async def jobs(self, *, states: Collection[JobState] | None = None) -> list[Job]:
        wanted = sorted({JobState(state).value for state in states}) if states is not None else []
        query = "SELECT payload, answer FROM relay_jobs"
        if states is not None:
            query += f" WHERE state IN ({', '.join('?' * len(wanted))})" if wanted else " WHERE 0"
        query += " ORDER BY created_at, id"
        rows = await self._call(lambda conn: conn.execute(query, wanted).fetchall())
        return _loads(rows)

    async def claim(
        self, *, topics: Collection[str], limit: int = 100, own: bool = False
    ) -> list[Job]:
        wanted = sorted(set(topics))
        if not wanted or limit <= 0:
            return []
        parameters = {"me": self.owner, "own": own, "topics": json.dumps(wanted), "limit": limit}

        def claim(conn: sqlite3.Connection) -> list[tuple[str, str | None]]:
            times = self._times()
            rows: list[tuple[str, str | None]] = conn.execute(
                schema.CLAIM, {**parameters, **times}
            ).fetchall()
            conn.execute(schema.PRUNE_OWNERS, {**parameters, **times})
            return rows

        jobs = oldest_first(_loads(await self._write(claim)))
        if jobs:
            log.debug("claimed %d journal jobs", len(jobs))
        return jobs

    async def renew(self) -> None:
        def renew(conn: sqlite3.Connection) -> None:
            conn.execute(schema.RENEW, {"me": self.owner, **self._times()})

        await self._write(renew)

    async def release(self, job_id: str | None = None) -> None:
        def release(conn: sqlite3.Connection) -> None:
            if job_id is None:
                conn.execute(schema.RELEASE_LEASE, {"me": self.owner})
            else:
                conn.execute(schema.RELEASE_JOB, {"me": self.owner, "id": job_id})

        await self._write(release)

    async def answer(self, token_hash: str, answer: str) -> Verdict:
        def keep(conn: sqlite3.Connection) -> Verdict:
            row = conn.execute(schema.ANSWER_FIND, {"hash": token_hash}).fetchone()
            if row is None:
                return Verdict.UNKNOWN
            state, answered, deadline = row
            verdict = judge_answer(JobState(state), bool(answered), deadline, self.clock.wall())
            if verdict is Verdict.ACCEPTED:
                conn.execute(schema.ANSWER_SET, {"hash": token_hash, "answer": answer})
            return verdict

        return await self._write(keep)

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

    async def prune(self, *, finished_before: float) -> int:
        def prune(conn: sqlite3.Connection) -> int:
            return conn.execute(schema.PRUNE_FINISHED, {"before": finished_before}).rowcount

        return await self._write(prune)

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
