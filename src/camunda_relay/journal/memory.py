"""A journal that lives as long as the process: nothing survives a crash (``:memory:``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta

from camunda_relay.clock import SYSTEM, Clock
from camunda_relay.journal.base import (
    DEFAULT_LEASE,
    NOBODY,
    UnreadableJob,
    Verdict,
    check_owner,
    judge_answer,
    oldest_first,
    wanted_keys,
)
from camunda_relay.journal.codec import loads_answer
from camunda_relay.replies.job import Job, JobState

__all__ = ["MemoryJournal"]


@dataclass
class _Entry:
    job: Job
    owner: str
    answer: str | None = None

    @property
    def read(self) -> Job:
        """The job as a journal returns it: with its answer."""
        if self.answer is None:
            return self.job
        return dataclasses.replace(self.job, answer=loads_answer(self.answer))

    def claimable(self, now: float) -> bool:
        """A deferred job only once answered or past its deadline."""
        job = self.job
        if job.state is not JobState.DEFERRED:
            return True
        return self.answer is not None or (job.deadline is not None and job.deadline <= now)


class MemoryJournal:
    """A journal that lives as long as the process: nothing survives a crash.

    :meth:`share` gives another owner's view of the same jobs and leases, as a second worker
    process on one database would have. Leases are read from ``clock`` (wall time), so tests
    move time through them with a :class:`~camunda_relay.clock.ManualClock`. Every method runs
    without awaiting, so each is atomic on the event loop without a lock.
    """

    durable = False

    def __init__(
        self, *, owner: str = "local", lease: timedelta = DEFAULT_LEASE, clock: Clock = SYSTEM
    ) -> None:
        self.owner = check_owner(owner)
        self.lease = lease
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._leases: dict[str, float] = {}  # owner -> lease end, epoch seconds

    def share(
        self, *, owner: str, lease: timedelta | None = None, clock: Clock | None = None
    ) -> MemoryJournal:
        """A journal for ``owner`` on the same jobs (same lease and clock unless given)."""
        other = MemoryJournal(
            owner=owner,
            lease=self.lease if lease is None else lease,
            clock=self.clock if clock is None else clock,
        )
        other._entries = self._entries
        other._leases = self._leases
        return other

    # -- leases ------------------------------------------------------------------------------

    def _live(self, owner: str) -> bool:
        """Whether ``owner`` holds a lease that has not run out (an owner without one: no)."""
        return self._leases.get(owner, float("-inf")) > self.clock.wall()

    def _free(self, owner: str) -> bool:
        """Whether a job held by ``owner`` may be taken by this one."""
        return owner in (self.owner, NOBODY) or not self._live(owner)

    # -- the journal -------------------------------------------------------------------------

    async def record(self, job: Job) -> bool:
        if job.id in self._entries:
            return False
        self._store(None, job, NOBODY if job.state.finished else self.owner)
        return True

    async def save(self, job: Job, *, synced: bool = True) -> bool:
        entry = self._entries.get(job.id)
        if entry is not None and not self._may_write(entry, job):
            return False
        owner = NOBODY if job.state.finished else self.owner
        self._store(entry, job, owner)
        return True

    async def park(self, job: Job) -> Job | None:
        entry = self._entries.get(job.id)
        if entry is not None and not self._free(entry.owner):
            return None
        answered = entry is not None and entry.answer is not None
        stored = self._store(entry, job, self.owner if answered else NOBODY)
        return stored.read

    def _may_write(self, entry: _Entry, job: Job) -> bool:
        """Free to write, and no stored answer the job does not carry (its runner would go
        past it)."""
        return self._free(entry.owner) and (entry.answer is None or job.answer is not None)

    def _store(self, entry: _Entry | None, job: Job, owner: str) -> _Entry:
        """Keep ``job`` (without its answer: only :meth:`answer` writes one) held by
        ``owner``; a changed token drops the stored answer."""
        job = dataclasses.replace(job, answer=None, reply_token=None)
        if entry is None:
            entry = self._entries[job.id] = _Entry(job, owner)
            return entry
        if entry.job.token_hash != job.token_hash:
            entry.answer = None
        entry.job, entry.owner = job, owner
        return entry

    async def get(self, job_id: str) -> Job | None:
        entry = self._entries.get(job_id)
        return entry.read if entry is not None else None

    async def unfinished(self) -> list[Job]:
        return [entry.read for entry in self._unfinished()]

    async def unfinished_instances(self) -> set[str]:
        return {entry.job.task.process_instance_id for entry in self._unfinished()}

    def _unfinished(self) -> list[_Entry]:
        entries = [entry for entry in self._entries.values() if not entry.job.state.finished]
        return sorted(entries, key=lambda entry: (entry.job.created_at, entry.job.id))

    async def jobs(self, *, states: Collection[JobState] | None = None) -> list[Job]:
        found = [e.read for e in self._entries.values() if states is None or e.job.state in states]
        return oldest_first(found)

    async def claim(
        self,
        *,
        topics: Collection[str],
        limit: int = 100,
        filters: Mapping[str, str] | None = None,
        running: Collection[str] = (),
    ) -> list[Job]:
        wanted = {(topic, key) for topic, key in wanted_keys(topics, filters)}
        busy = set(running)
        taken: list[Job] = []
        now = self.clock.wall()
        for entry in self._unfinished():
            if len(taken) >= limit:
                break
            job = entry.job
            if (job.task.topic, job.filter_key) not in wanted or not entry.claimable(now):
                continue
            if entry.owner == self.owner and job.id in busy:
                continue
            if self._free(entry.owner):
                entry.owner = self.owner
                taken.append(entry.read)
        self._forget_idle_owners()
        return taken

    async def unreadable(self) -> list[UnreadableJob]:
        return []  # jobs live as objects here: nothing to read

    async def filter_keys(self, topics: Collection[str]) -> dict[tuple[str, str], int]:
        wanted = set(topics)
        counts: dict[tuple[str, str], int] = {}
        for entry in self._unfinished():
            if entry.job.task.topic in wanted:
                key = (entry.job.task.topic, entry.job.filter_key)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def _forget_idle_owners(self) -> None:
        """Drop the leases that ran out of owners that hold no unfinished job (the SQL
        journals do the same, so their owners table stays as small as the live fleet)."""
        holding = {entry.owner for entry in self._unfinished()}
        for owner in [owner for owner in self._leases if owner not in holding]:
            if owner != self.owner and not self._live(owner):
                del self._leases[owner]

    async def renew(self) -> None:
        self._leases[self.owner] = self.clock.wall() + self.lease.total_seconds()

    async def release(self, job_id: str | None = None) -> None:
        if job_id is None:
            if self.owner in self._leases:
                self._leases[self.owner] = 0.0
            return
        entry = self._entries.get(job_id)
        if entry is not None and entry.owner == self.owner:
            entry.owner = NOBODY

    async def answer(self, token_hash: str, answer: str) -> Verdict:
        entry = next(
            (e for e in self._entries.values() if e.job.token_hash == token_hash and token_hash),
            None,
        )
        if entry is None:
            return Verdict.UNKNOWN
        job = entry.job
        verdict = judge_answer(job.state, entry.answer, job.deadline, self.clock.wall(), answer)
        if verdict is Verdict.ACCEPTED and entry.answer is None:
            entry.answer = answer
        return verdict

    async def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for entry in self._entries.values():
            counts[entry.job.state] += 1
        return counts

    async def delete(self, job_id: str) -> bool:
        return self._entries.pop(job_id, None) is not None

    async def prune(self, *, finished_before: float) -> int:
        old = [
            job_id
            for job_id, entry in self._entries.items()
            if entry.job.state.finished and entry.job.updated_at < finished_before
        ]
        for job_id in old:
            del self._entries[job_id]
        return len(old)

    async def all(self) -> list[Job]:
        """Every job (in the order recorded); :meth:`jobs` sorts and filters."""
        return [entry.read for entry in self._entries.values()]

    def lease_until(self, owner: str) -> float:
        """When ``owner``'s lease runs out, epoch seconds (0 when it has none): for tests."""
        return self._leases.get(owner, 0.0)

    def holder(self, job_id: str) -> str | None:
        """Who holds the job (NOBODY when nobody does; None for an unknown job): for tests."""
        entry = self._entries.get(job_id)
        return entry.owner if entry is not None else None

    async def close(self) -> None:
        return None
