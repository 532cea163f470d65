"""The SQLite journal's connection (:mod:`camunda_relay.journal.sqlite` describes the
journal): opening the file and creating or migrating its schema, the write transaction and the
commit of a group of writes, and the journal errors SQLite's errors become."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from camunda_relay.errors import ConfigurationError, JournalError, JournalUnavailable
from camunda_relay.files import private_file
from camunda_relay.journal import sqlite_schema as schema
from camunda_relay.journal.sqlite_schema import SCHEMA_VERSION

__all__ = ["BUSY_TIMEOUT", "commit_group", "connect", "journal_error", "mapped", "write"]

log = logging.getLogger("camunda_relay.journal.sqlite")

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


def mapped(error: BaseException, path: Path) -> BaseException:
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


def connect(path: Path, busy_timeout: timedelta) -> sqlite3.Connection:
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
        with write(conn):
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
def write(conn: sqlite3.Connection) -> Iterator[None]:
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


def commit_group(
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
    with write(conn):
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
