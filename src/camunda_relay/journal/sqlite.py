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
clock. The schema and the statements are in :mod:`camunda_relay.journal.sqlite_schema`, the
connection and the group commit in :mod:`camunda_relay.journal.sqlite_connection`.

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
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from camunda_relay.clock import SYSTEM, Clock
from camunda_relay.errors import CorruptJob
from camunda_relay.journal import codec as journal_codec
from camunda_relay.journal import sqlite_connection as connection
from camunda_relay.journal import sqlite_schema as schema
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
from camunda_relay.journal.sqlite_connection import BUSY_TIMEOUT, journal_error
from camunda_relay.journal.sqlite_schema import SCHEMA_VERSION
from camunda_relay.replies.job import Job, JobState

__all__ = ["BUSY_TIMEOUT", "SCHEMA_VERSION", "SqliteJournal", "journal_error"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_Queued = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", bool]
"""A write waiting for the next commit: its action, its caller's future, whether it is synced."""


def _loads(rows: list[tuple[Any, ...]]) -> list[Job]:
    """The jobs of ``(id, *ROW)`` rows; one that cannot be read is left out, named by id in
    a WARNING (``pending`` lists it once a claim marked it)."""
    jobs, bad = _decode(rows)
    for job_id, reason in bad:
        log.warning("journal job %s cannot be read (%s); left out", job_id, reason)
    return jobs


def _decode(rows: list[tuple[Any, ...]]) -> tuple[list[Job], list[tuple[str, str]]]:
    """The jobs of ``(id, *ROW)`` rows, read one by one, and the ``(id, reason)`` of each
    row that cannot be read."""
    jobs: list[Job] = []
    bad: list[tuple[str, str]] = []
    for job_id, *row in rows:
        try:
            jobs.append(journal_codec.from_row(row))
        except CorruptJob as error:
            bad.append((str(job_id), str(error)))
    return jobs, bad


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
                self._conn = connection.connect(self.path, self.busy_timeout)
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
                    partial(connection.commit_group, actions=actions, synced=synced),
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
                    future.set_exception(connection.mapped(value, self.path))

    def _times(self) -> dict[str, float]:
        """``now`` and this owner's ``lease_until`` from the clock (read at commit time)."""
        now = self.clock.wall()
        return {"now": now, "lease_until": now + self.lease.total_seconds()}

    def _row(self, job: Job) -> dict[str, object]:
        """The job's columns, without its payload (:meth:`_payload`)."""
        return {
            **journal_codec.columns(job),
            **journal_codec.values(job),
            "me": self.owner,
            "owner": NOBODY if job.state.finished else self.owner,
            "knows": job.answer is not None,
        }

    # -- the journal -------------------------------------------------------------------------

    async def record(self, job: Job) -> bool:
        row = {**self._row(job), "payload": journal_codec.dumps_task(job)}

        def record(conn: sqlite3.Connection) -> bool:
            return bool(conn.execute(schema.RECORD, {**row, **self._times()}).rowcount == 1)

        return await self._write(record)

    async def save(self, job: Job, *, synced: bool = True) -> bool:
        """A job that made an attempt has the task it was recorded with (a task offered
        again starts afresh, with no attempt): then only its columns are written."""
        row = self._row(job)
        if not job.attempts:
            row["payload"] = journal_codec.dumps_task(job)

        def save(conn: sqlite3.Connection) -> bool:
            values = {**row, **self._times()}
            if "payload" not in values:
                if conn.execute(schema.SAVE_STEP, values).rowcount == 1:
                    return True
                values["payload"] = journal_codec.dumps_task(job)  # unknown, or another owner's
            return bool(conn.execute(schema.SAVE, values).rowcount == 1)

        return await self._write(save, synced=synced)

    async def park(self, job: Job) -> Job | None:
        row = self._row(job)

        def park(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            values = {**row, **self._times()}
            parked: tuple[Any, ...] | None = conn.execute(schema.PARK, values).fetchone()
            if parked is not None:
                return parked
            values.update(owner=NOBODY, payload=journal_codec.dumps_task(job))
            if conn.execute(schema.RECORD, values).rowcount == 0:
                return None  # another owner's
            query = f"SELECT {schema.JOB} FROM relay_jobs WHERE id = :id"  # noqa: S608
            found: tuple[Any, ...] | None = conn.execute(query, values).fetchone()
            return found

        stored = await self._write(park)
        return journal_codec.from_row(stored) if stored is not None else None

    async def get(self, job_id: str) -> Job | None:
        def get(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            query = f"SELECT id, {schema.JOB} FROM relay_jobs WHERE id = ?"  # noqa: S608
            row: tuple[Any, ...] | None = conn.execute(query, (job_id,)).fetchone()
            return row

        row = await self._call(get)
        return journal_codec.from_row(row[1:]) if row is not None else None

    async def unfinished(self) -> list[Job]:
        rows = await self._call(lambda conn: conn.execute(schema.UNFINISHED_PAYLOADS).fetchall())
        return _loads(rows)

    async def unfinished_instances(self) -> set[str]:
        rows = await self._call(lambda conn: conn.execute(schema.UNFINISHED_INSTANCES).fetchall())
        return {instance for (instance,) in rows}

    async def jobs(self, *, states: Collection[JobState] | None = None) -> list[Job]:
        wanted = sorted({JobState(state).value for state in states}) if states is not None else []
        query = f"SELECT id, {schema.JOB} FROM relay_jobs"  # noqa: S608
        if states is not None:
            query += f" WHERE state IN ({', '.join('?' * len(wanted))})" if wanted else " WHERE 0"
        query += " ORDER BY created_at, id"
        rows = await self._call(lambda conn: conn.execute(query, wanted).fetchall())
        return _loads(rows)

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
        parameters = {
            "me": self.owner,
            "wanted": json.dumps(wanted),
            "running": json.dumps(sorted(set(running))),
            "limit": limit,
        }

        def claim(conn: sqlite3.Connection) -> tuple[list[Job], list[tuple[str, str]]]:
            # Rows are read one by one inside the claim's own write: an unreadable one is
            # given back and marked in the same commit, and the others run.
            times = self._times()
            rows = conn.execute(schema.CLAIM, {**parameters, **times}).fetchall()
            jobs, bad = _decode(rows)
            for job_id, reason in bad:
                conn.execute(schema.MARK_UNREADABLE, {"id": job_id, "reason": reason, **parameters})
            conn.execute(schema.PRUNE_OWNERS, {**parameters, **times})
            return jobs, bad

        jobs, bad = await self._write(claim)
        for job_id, reason in bad:
            log.error(UNREADABLE_LINE, job_id, reason)
        if jobs:
            log.debug("claimed %d journal jobs", len(jobs))
        return oldest_first(jobs)

    async def unreadable(self) -> list[UnreadableJob]:
        rows = await self._call(lambda conn: conn.execute(schema.UNREADABLE).fetchall())
        return [UnreadableJob(*(str(value) for value in row)) for row in rows]

    async def filter_keys(self, topics: Collection[str]) -> dict[tuple[str, str], int]:
        wanted = json.dumps(sorted(set(topics)))
        rows = await self._call(
            lambda conn: conn.execute(schema.FILTER_KEYS, {"topics": wanted}).fetchall()
        )
        return {(topic, key): count for topic, key, count in rows}

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
            state, stored, deadline = row
            now = self.clock.wall()
            verdict = judge_answer(JobState(state), stored, deadline, now, answer)
            if verdict is Verdict.ACCEPTED and stored is None:
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
