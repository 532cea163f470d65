"""A reply job's life, and the journal that remembers it.

::

    recorded ──complete──▶ acknowledged ──work──▶ done ──correlate──▶ delivered
        │                        │                  │
        └─ lock lost: dropped    └─ fails: failed   └─ deadline passed: failed
                                   (incident)          (incident)

A job is written to the journal (keyed by the external task id) *before* the task is
completed, so a redelivered task with a known id is not run twice, and after a restart every
job that is not finished resumes where it stopped: ``acknowledged`` re-runs the work,
``done`` re-sends the message. The journal is a small interface; :class:`MemoryJournal`
keeps jobs for the life of one process, ``SqliteJournal`` (journal_sqlite.py, the default)
and ``PostgresJournal`` (journal_postgres.py, several worker processes on one database)
keep them on disk. :func:`open_journal` picks one from a setting.

Leases let several workers share one journal: each journal has an ``owner`` (the worker's
id); a job belongs to the owner that recorded or last claimed it until its lease runs out.
While it runs, a worker renews its leases; at a clean shutdown it releases them; and it
claims the unfinished jobs whose lease expired (a crashed worker's) together with its own.
A worker that was paused past its lease (a stopped container, a long GC, a lost database)
cannot overwrite the job its heir now holds: :meth:`Journal.save` refuses, and the worker
leaves the job to the heir. A finished job is held by nobody.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from camunda_relay.errors import ConfigurationError
from camunda_relay.task import Task

__all__ = ["DEFAULT_LEASE", "Job", "JobState", "Journal", "MemoryJournal", "open_journal"]

DEFAULT_LEASE = timedelta(seconds=60)


class JobState(StrEnum):
    RECORDED = "recorded"
    ACKNOWLEDGED = "acknowledged"
    DONE = "done"
    DELIVERED = "delivered"
    FAILED = "failed"
    DROPPED = "dropped"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({JobState.DELIVERED, JobState.FAILED, JobState.DROPPED})


@dataclass(frozen=True)
class Job:
    """One reply job. ``result`` holds the variables to send; ``error`` never holds values."""

    task: Task
    message: str
    by_business_key: bool = False
    state: JobState = JobState.RECORDED
    attempts: int = 0
    deliveries: int = 0
    result: Mapping[str, Any] | None = field(default=None, repr=False)
    error: str | None = None
    deadline: float | None = None  # wall-clock time (epoch seconds) for delivery
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        return self.task.job_id

    def advance(self, state: JobState, **changes: Any) -> Job:
        """A copy in ``state`` with ``changes`` applied and ``updated_at`` set to now."""
        return dataclasses.replace(self, state=state, updated_at=time.time(), **changes)


class Journal(Protocol):
    """Durable memory of reply jobs (SQLite by default; memory for tests and one-offs).

    Every implementation passes the one contract suite, tests/unit/test_journal_contract.py.
    """

    owner: str
    """The id of the worker this journal object acts for (set at construction)."""

    async def record(self, job: Job) -> bool:
        """Store a new job; False (and nothing stored) when a job with its id exists.

        The new job belongs to :attr:`owner`, leased until now plus the journal's lease.
        """
        ...

    async def save(self, job: Job) -> bool:
        """Store the job's new state (insert it if unknown) and hold it: the job belongs to
        :attr:`owner`, leased until now plus the lease (held by nobody once finished).

        False, and nothing written, when another owner holds the job under a live lease (this
        worker lost its lease and the job was taken over).
        """
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def unfinished(self) -> list[Job]:
        """Jobs not yet delivered, failed or dropped, oldest first (whoever owns them)."""
        ...

    async def jobs(self, *, states: Collection[JobState] | None = None) -> list[Job]:
        """Every job in one of ``states`` (all states when None), finished ones too, oldest
        first (whoever owns them): for listings such as ``camunda-relay pending``."""
        ...

    async def claim(self, *, limit: int = 1000) -> list[Job]:
        """Take over unfinished jobs whose lease expired, and re-take this owner's; oldest first.

        Taken jobs belong to :attr:`owner`, leased until now plus the lease. Two claimers
        never get the same job while its lease runs.
        """
        ...

    async def renew(self) -> int:
        """Extend the lease of every unfinished job this owner holds; returns how many."""
        ...

    async def release(self) -> None:
        """Give up this owner's leases (at a clean shutdown): others may claim the jobs at once."""
        ...

    async def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state is a key)."""
        ...

    async def delete(self, job_id: str) -> bool:
        """Forget a job (``pending cancel``); False when there was none."""
        ...

    async def close(self) -> None:
        """Release the connection; safe to call more than once."""
        ...


def check_owner(owner: str) -> str:
    """``owner`` if it can name a worker in a journal, else :class:`ConfigurationError`."""
    if not isinstance(owner, str) or not owner.strip():
        raise ConfigurationError("a journal owner (the worker id) must be non-empty text")
    return owner


@dataclass
class _Entry:
    job: Job
    owner: str
    lease_until: float  # epoch seconds


class MemoryJournal:
    """A journal that lives as long as the process: nothing survives a crash.

    :meth:`share` gives another owner's view of the same jobs, as a second worker process on
    one database would have. Every method runs without awaiting, so each is atomic on the
    event loop without a lock.
    """

    durable = False

    def __init__(self, *, owner: str = "local", lease: timedelta = DEFAULT_LEASE) -> None:
        self.owner = check_owner(owner)
        self.lease = lease
        self._entries: dict[str, _Entry] = {}

    def share(self, *, owner: str, lease: timedelta | None = None) -> MemoryJournal:
        """A journal for ``owner`` on the same jobs (same lease unless given)."""
        other = MemoryJournal(owner=owner, lease=self.lease if lease is None else lease)
        other._entries = self._entries
        return other

    def _lease_until(self) -> float:
        return time.time() + self.lease.total_seconds()

    async def record(self, job: Job) -> bool:
        if job.id in self._entries:
            return False
        self._entries[job.id] = _Entry(job, self.owner, self._lease_until())
        return True

    async def save(self, job: Job) -> bool:
        entry = self._entries.get(job.id)
        lease_until = 0.0 if job.state.finished else self._lease_until()
        if entry is None:
            self._entries[job.id] = _Entry(job, self.owner, lease_until)
            return True
        if entry.owner != self.owner and entry.lease_until >= time.time():
            return False
        entry.job, entry.owner, entry.lease_until = job, self.owner, lease_until
        return True

    async def get(self, job_id: str) -> Job | None:
        entry = self._entries.get(job_id)
        return entry.job if entry is not None else None

    async def unfinished(self) -> list[Job]:
        return [entry.job for entry in self._unfinished()]

    def _unfinished(self) -> list[_Entry]:
        entries = [entry for entry in self._entries.values() if not entry.job.state.finished]
        return sorted(entries, key=lambda entry: (entry.job.created_at, entry.job.id))

    async def claim(self, *, limit: int = 1000) -> list[Job]:
        now = time.time()
        taken: list[Job] = []
        for entry in self._unfinished():
            if len(taken) >= limit:
                break
            if entry.lease_until < now or entry.owner == self.owner:
                entry.owner = self.owner
                entry.lease_until = self._lease_until()
                taken.append(entry.job)
        return taken

    async def renew(self) -> int:
        mine = [entry for entry in self._unfinished() if entry.owner == self.owner]
        for entry in mine:
            entry.lease_until = self._lease_until()
        return len(mine)

    async def release(self) -> None:
        for entry in self._unfinished():
            if entry.owner == self.owner:
                entry.lease_until = 0.0

    async def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for entry in self._entries.values():
            counts[entry.job.state] += 1
        return counts

    async def delete(self, job_id: str) -> bool:
        return self._entries.pop(job_id, None) is not None

    async def jobs(self, *, states: Collection[JobState] | None = None) -> list[Job]:
        found = [e.job for e in self._entries.values() if states is None or e.job.state in states]
        return sorted(found, key=lambda job: (job.created_at, job.id))

    async def all(self) -> list[Job]:
        """Every job (in the order recorded); :meth:`jobs` sorts and filters."""
        return [entry.job for entry in self._entries.values()]

    async def close(self) -> None:
        return None


def open_journal(url_or_path: str, *, owner: str, lease: timedelta = DEFAULT_LEASE) -> Journal:
    """The journal a setting names (``CAMUNDA_JOURNAL``); opens no connection yet.

    ``postgresql://...`` or ``postgres://...``: :class:`~camunda_relay.journal_postgres.
    PostgresJournal` (needs ``camunda-relay[postgres]``); ``:memory:``: :class:`MemoryJournal`;
    anything else is the path of a SQLite file, created with its folders on first use.
    """
    if url_or_path.startswith(("postgresql://", "postgres://")):
        try:
            from camunda_relay.journal_postgres import PostgresJournal
        except ModuleNotFoundError as error:
            if error.name is None or not error.name.startswith("psycopg"):
                raise
            raise ConfigurationError(
                "a PostgreSQL journal needs psycopg: pip install 'camunda-relay[postgres]'"
            ) from None
        return PostgresJournal(url_or_path, owner=owner, lease=lease)
    if url_or_path == ":memory:":
        return MemoryJournal(owner=owner, lease=lease)
    if "://" in url_or_path:
        scheme = url_or_path.split("://", 1)[0]
        raise ConfigurationError(
            f"journal URL scheme {scheme!r} is not supported "
            "(use postgresql://..., :memory: or a SQLite file path)"
        )
    if not url_or_path.strip():
        raise ConfigurationError("the journal path is empty")
    from camunda_relay.journal_sqlite import SqliteJournal

    return SqliteJournal(Path(url_or_path), owner=owner, lease=lease)
