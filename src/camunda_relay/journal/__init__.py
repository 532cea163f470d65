"""Durable state behind one small protocol: :class:`Journal` (base), the memory journal,
the SQLite file (the default) and a PostgreSQL table shared by several worker pods.
:func:`open_journal` picks one from a setting (``CAMUNDA_JOURNAL``)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from camunda_relay.clock import SYSTEM, Clock
from camunda_relay.errors import ConfigurationError
from camunda_relay.journal.base import DEFAULT_LEASE, NOBODY, Journal, check_owner
from camunda_relay.journal.memory import MemoryJournal

__all__ = ["DEFAULT_LEASE", "NOBODY", "Journal", "MemoryJournal", "check_owner", "open_journal"]

# libpq's keyword form (host=... dbname=...): not a file name anybody means.
_KEYWORD_DSN = re.compile(r"^\s*(host|hostaddr|port|dbname|user|password|service)\s*=", re.I)


def open_journal(
    url_or_path: str, *, owner: str, lease: timedelta = DEFAULT_LEASE, clock: Clock = SYSTEM
) -> Journal:
    """The journal a setting names (``CAMUNDA_JOURNAL``); opens no connection yet.

    ``clock`` times the leases of the memory and SQLite journals; PostgreSQL uses the
    database's clock.

    ``postgresql://...`` or ``postgres://...``: :class:`~camunda_relay.journal.postgres.
    PostgresJournal` (needs ``camunda-relay[postgres]``); ``:memory:``: :class:`MemoryJournal`;
    anything else is the path of a SQLite file, created with its folders on first use.
    """
    if url_or_path.startswith(("postgresql://", "postgres://")):
        try:
            from camunda_relay.journal.postgres import PostgresJournal
        except ModuleNotFoundError as error:
            if error.name is None or not error.name.startswith("psycopg"):
                raise
            raise ConfigurationError(
                "a PostgreSQL journal needs psycopg: pip install 'camunda-relay[postgres]'"
            ) from None
        return PostgresJournal(url_or_path, owner=owner, lease=lease)
    if url_or_path == ":memory:":
        return MemoryJournal(owner=owner, lease=lease, clock=clock)
    if "://" in url_or_path:
        scheme = url_or_path.split("://", 1)[0]
        raise ConfigurationError(
            f"journal URL scheme {scheme!r} is not supported "
            "(use postgresql://..., :memory: or a SQLite file path)"
        )
    if not url_or_path.strip():
        raise ConfigurationError("the journal path is empty")
    if _KEYWORD_DSN.match(url_or_path):
        raise ConfigurationError(
            "the journal is given in PostgreSQL's keyword form (host=... dbname=...): give it "
            "as a URL, postgresql://user:password@host:port/dbname"
        )
    from camunda_relay.journal.sqlite import SqliteJournal

    return SqliteJournal(Path(url_or_path), owner=owner, lease=lease, clock=clock)
