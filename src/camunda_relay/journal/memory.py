"""A journal that lives as long as the process: nothing survives a crash (``:memory:``)."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from camunda_relay.journal.base import DEFAULT_LEASE, check_owner
from camunda_relay.replies.job import Job, JobState

__all__ = ["MemoryJournal"]


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
