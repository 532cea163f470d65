"""One reconciliation sweep at a time per journal, however many workers share it.

N worker processes on one journal would otherwise each sweep the engine for orphans every
interval (N times the queries, and, rarely, two incidents for one new orphan). Before a
sweep a worker tries to take the journal's sweep lock without waiting; when another worker
holds it, this one skips its turn. Nothing in the journal's tables changes:

- PostgreSQL: a session advisory lock (``pg_try_advisory_lock``) keyed by the journal's
  table, on a connection of its own opened for the sweep and closed after it (closing the
  session releases the lock, so a worker that dies mid-sweep holds nothing);
- SQLite: an OS file lock (``flock``) on a file beside the journal, ``<journal>.sweep-lock``
  (released by the OS when the process dies);
- the memory journal: nobody else can see it, so the lock is always free.

A lock that cannot be asked for (the database does not answer) raises
:class:`~camunda_relay.errors.JournalError`; the caller skips the sweep then.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from camunda_relay.errors import JournalError, JournalUnavailable
from camunda_relay.journal.base import Journal

if TYPE_CHECKING:
    from camunda_relay.journal.postgres import PostgresJournal

__all__ = ["ADVISORY_CLASS", "LOCK_SUFFIX", "sweep_lock"]

ADVISORY_CLASS = 0x52454C59
"""The first key of the advisory lock ("RELY"); the second is ``hashtext(table)``."""
LOCK_SUFFIX = ".sweep-lock"


def sweep_lock(journal: Journal) -> AbstractAsyncContextManager[bool]:
    """``async with sweep_lock(journal) as held:``: ``held`` is True when this caller may
    sweep now (the lock is released on exit), False when another holder sweeps."""
    from camunda_relay.journal.failing import unwrapped
    from camunda_relay.journal.sqlite import SqliteJournal

    journal = unwrapped(journal)  # a journal with failpoints locks as the one it wraps
    if isinstance(journal, SqliteJournal):
        return _file_lock(journal.path.with_name(journal.path.name + LOCK_SUFFIX))
    postgres = _postgres_class()
    if postgres is not None and isinstance(journal, postgres):
        return _advisory_lock(journal)
    return _always()


def _postgres_class() -> type[PostgresJournal] | None:
    try:
        from camunda_relay.journal.postgres import PostgresJournal
    except ModuleNotFoundError:  # no psycopg: no PostgreSQL journal either
        return None
    return PostgresJournal


@asynccontextmanager
async def _always() -> AsyncIterator[bool]:
    yield True


@asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[bool]:
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise JournalError(f"cannot open the sweep lock {path} ({error.strerror})") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


@asynccontextmanager
async def _advisory_lock(journal: PostgresJournal) -> AsyncIterator[bool]:
    import psycopg

    from camunda_relay.journal.postgres import journal_error

    doing = "taking the sweep lock"
    try:
        async with asyncio.timeout(journal.call_timeout.total_seconds()):
            conn = await psycopg.AsyncConnection.connect(journal.conninfo, autocommit=True)
    except psycopg.Error as error:
        raise journal_error(error, doing) from None
    except TimeoutError:
        raise JournalUnavailable(f"PostgreSQL journal: {doing} timed out") from None
    try:
        try:
            async with asyncio.timeout(journal.call_timeout.total_seconds()):
                cursor = await conn.execute(
                    "SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                    (ADVISORY_CLASS, journal.table),
                )
                row = await cursor.fetchone()
        except psycopg.Error as error:
            raise journal_error(error, doing) from None
        except TimeoutError:
            raise JournalUnavailable(f"PostgreSQL journal: {doing} timed out") from None
        yield bool(row and row[0])
    finally:
        # Closing the session releases its advisory locks (also when the sweep failed).
        with contextlib.suppress(psycopg.Error):
            await conn.close()
