"""A journal that lives as long as the process: nothing survives a crash (``:memory:``)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta

from camunda_relay.clock import SYSTEM, Clock
from camunda_relay.journal.base import DEFAULT_LEASE, NOBODY, check_owner
from camunda_relay.replies.job import Job, JobState

__all__ = ["MemoryJournal"]


@dataclass
class _Shared:
    jobs: dict[str, tuple[Job, str]] = field(default_factory=dict)  # id -> (job, owner)
    leases: dict[str, float] = field(default_factory=dict)  # owner -> lease_until


class MemoryJournal:
    """Jobs in a dict: nothing survives the process.

    :meth:`share` gives another owner's view of the same jobs, as a second worker process on
    one database would have. Every method runs without awaiting, so each is atomic on the
    event loop without a lock.
    """

    durable = False

    def __init__(
        self, *, owner: str = "local", lease: timedelta = DEFAULT_LEASE, clock: Clock = SYSTEM
    ) -> None:
        self.owner = check_owner(owner)
        self.lease = lease
        self.clock = clock
        self._shared = _Shared()

    def share(self, *, owner: str, lease: timedelta | None = None) -> MemoryJournal:
        """A journal for ``owner`` on the same jobs (same lease and clock unless given)."""
        other = MemoryJournal(
            owner=owner, lease=self.lease if lease is None else lease, clock=self.clock
        )
        other._shared = self._shared
        return other

    def _live(self, owner: str) -> bool:
        return owner != NOBODY and self._shared.leases.get(owner, 0.0) >= self.clock.wall()

    def _holder(self, job: Job) -> str:
        return NOBODY if job.state.finished else self.owner

    async def record(self, job: Job) -> bool:
        if job.id in self._shared.jobs:
            return False
        self._shared.jobs[job.id] = (job, self._holder(job))
        return True

    async def save(self, job: Job) -> bool:
        known = self._shared.jobs.get(job.id)
        if known is not None and known[1] not in (self.owner, NOBODY) and self._live(known[1]):
            return False
        self._shared.jobs[job.id] = (job, self._holder(job))
        return True

    async def get(self, job_id: str) -> Job | None:
        known = self._shared.jobs.get(job_id)
        return known[0] if known is not None else None

    def _sorted(self, jobs: list[Job]) -> list[Job]:
        return sorted(jobs, key=lambda job: (job.created_at, job.id))

    async def unfinished(self) -> list[Job]:
        return self._sorted([j for j, _ in self._shared.jobs.values() if not j.state.finished])

    async def jobs(self, *, states: Collection[JobState] | None = None) -> list[Job]:
        found = [j for j, _ in self._shared.jobs.values() if states is None or j.state in states]
        return self._sorted(found)

    async def claim(
        self, *, topics: Collection[str], limit: int = 100, own: bool = False
    ) -> list[Job]:
        wanted = set(topics)
        taken: list[Job] = []
        for job in await self.unfinished():
            if len(taken) >= limit:
                break
            holder = self._shared.jobs[job.id][1]
            if job.task.topic not in wanted:
                continue
            if holder == self.owner and not own:
                continue
            if holder not in (NOBODY, self.owner) and self._live(holder):
                continue
            self._shared.jobs[job.id] = (job, self.owner)
            taken.append(job)
        return taken

    async def renew(self) -> None:
        self._shared.leases[self.owner] = self.clock.wall() + self.lease.total_seconds()

    async def release(self, job_id: str | None = None) -> None:
        if job_id is None:
            self._shared.leases[self.owner] = 0.0
            return
        known = self._shared.jobs.get(job_id)
        if known is not None and known[1] == self.owner:
            self._shared.jobs[job_id] = (known[0], NOBODY)

    async def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for job, _ in self._shared.jobs.values():
            counts[job.state] += 1
        return counts

    async def delete(self, job_id: str) -> bool:
        return self._shared.jobs.pop(job_id, None) is not None

    async def all(self) -> list[Job]:
        """Every job (in the order recorded); :meth:`jobs` sorts and filters."""
        return [job for job, _ in self._shared.jobs.values()]

    def lease_until(self, owner: str) -> float:
        """When ``owner``'s lease runs out (0 when it has none)."""
        return self._shared.leases.get(owner, 0.0)

    def holder(self, job_id: str) -> str | None:
        """Who holds the job now (NOBODY when nobody does); None for an unknown job."""
        known = self._shared.jobs.get(job_id)
        return known[1] if known is not None else None

    async def close(self) -> None:
        return None
