"""The side-effect ledger: what the background work really did, measured apart from the worker.

Two tables in one SQLite file (WAL, ``synchronous=FULL``, so a ``kill -9`` right after a write
keeps it):

- ``attempts``: append-only, one row each time the work starts (re-runs after a crash are
  allowed, and counted);
- ``applied``: ``UNIQUE(job_key)``, the effect itself, applied with the job's idempotency key
  (``task.job_id``). A second try to apply the same key is refused and counted in
  ``reapplied``: without the key, that would have been a duplicate effect.

Several worker processes may share the file (each write is one ``BEGIN IMMEDIATE``
transaction on a fresh connection).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Ledger", "LedgerSummary"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_key TEXT NOT NULL,
    process_instance_id TEXT,
    worker TEXT,
    pid INTEGER,
    t REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS applied (
    job_key TEXT NOT NULL UNIQUE,
    process_instance_id TEXT,
    effect_id TEXT NOT NULL,
    attempt_id INTEGER,
    worker TEXT,
    pid INTEGER,
    t REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reapplied (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_key TEXT NOT NULL,
    attempt_id INTEGER,
    worker TEXT,
    t REAL NOT NULL
);
"""


@dataclass(frozen=True)
class LedgerSummary:
    attempts: dict[str, int]  # job key -> work starts
    applied: dict[str, str]  # job key -> effect id
    applied_instance: dict[str, list[str]]  # process instance id -> effect ids
    reapplied: dict[str, int]  # job key -> refused second applications
    workers: dict[str, set[str]]  # job key -> workers that started the work
    instance_attempts: dict[str, int]  # process instance id -> work starts

    def histogram(self) -> dict[int, int]:
        return dict(sorted(Counter(self.attempts.values()).items()))


class Ledger:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def attempt(self, job_key: str, process_instance_id: str, worker: str) -> int:
        """Record that the work starts; returns the attempt's id."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO attempts (job_key, process_instance_id, worker, pid, t) "
                "VALUES (?, ?, ?, ?, ?)",
                (job_key, process_instance_id, worker, os.getpid(), time.time()),
            )
            return int(cursor.lastrowid or 0)

    def apply(
        self, job_key: str, process_instance_id: str, attempt_id: int, worker: str
    ) -> tuple[str, bool]:
        """Apply the effect once per key; returns (effect id, True if it was applied before)."""
        effect_id = f"{job_key}#{attempt_id}"
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO applied (job_key, process_instance_id, effect_id, attempt_id, "
                "worker, pid, t) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_key) DO NOTHING",
                (
                    job_key,
                    process_instance_id,
                    effect_id,
                    attempt_id,
                    worker,
                    os.getpid(),
                    time.time(),
                ),
            )
            if cursor.rowcount == 1:
                return effect_id, False
            conn.execute(
                "INSERT INTO reapplied (job_key, attempt_id, worker, t) VALUES (?, ?, ?, ?)",
                (job_key, attempt_id, worker, time.time()),
            )
            (existing,) = conn.execute(
                "SELECT effect_id FROM applied WHERE job_key = ?", (job_key,)
            ).fetchone()
            return str(existing), True

    def summary(self) -> LedgerSummary:
        with self._connect() as conn:
            attempts: dict[str, int] = {}
            workers: dict[str, set[str]] = {}
            per_instance: dict[str, int] = {}
            for key, instance, worker in conn.execute(
                "SELECT job_key, process_instance_id, worker FROM attempts"
            ):
                attempts[key] = attempts.get(key, 0) + 1
                per_instance[instance] = per_instance.get(instance, 0) + 1
                workers.setdefault(key, set()).add(worker)
            applied: dict[str, str] = {}
            by_instance: dict[str, list[str]] = {}
            for key, instance, effect in conn.execute(
                "SELECT job_key, process_instance_id, effect_id FROM applied"
            ):
                applied[key] = effect
                by_instance.setdefault(instance, []).append(effect)
            reapplied = dict(
                conn.execute("SELECT job_key, count(*) FROM reapplied GROUP BY job_key").fetchall()
            )
        return LedgerSummary(attempts, applied, by_instance, reapplied, workers, per_instance)
