"""A journal whose writes pass the failpoints (:mod:`camunda_relay.failpoints`): each write
``w`` hits ``journal_<w>`` before it reaches the journal and ``journal_<w>_lost`` after it
committed, so that a test or the fault harness fails one write in turn (``fail``: nothing
written, or written with its answer lost), or kills the worker right before or after it.

A worker wraps its journal in one only while a journal failpoint is set
(:attr:`~camunda_relay.failpoints.Failpoints.journal_active`); reads pass straight through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TypeVar

from camunda_relay.failpoints import Failpoints
from camunda_relay.journal.base import Journal, UnreadableJob, Verdict
from camunda_relay.replies.job import Job, JobState

__all__ = ["FailpointJournal", "unwrapped"]

T = TypeVar("T")


class FailpointJournal:
    """``journal`` with a failpoint pair around each write (see the module docstring)."""

    def __init__(self, journal: Journal, failpoints: Failpoints) -> None:
        self.wrapped = journal
        self.owner = journal.owner
        self.durable = journal.durable
        self._failpoints = failpoints

    def __repr__(self) -> str:
        return f"FailpointJournal({self.wrapped!r})"

    async def _write(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        await self._failpoints.hit(f"journal_{name}")
        result = await call()
        await self._failpoints.hit(f"journal_{name}_lost")
        return result

    async def record(self, job: Job) -> bool:
        return await self._write("record", lambda: self.wrapped.record(job))

    async def save(self, job: Job, *, synced: bool = True) -> bool:
        return await self._write(
            f"save_{job.state.value}", lambda: self.wrapped.save(job, synced=synced)
        )

    async def park(self, job: Job) -> Job | None:
        return await self._write("park", lambda: self.wrapped.park(job))

    async def claim(
        self,
        *,
        topics: Collection[str],
        limit: int = 100,
        filters: Mapping[str, str] | None = None,
        running: Collection[str] = (),
    ) -> list[Job]:
        return await self._write(
            "claim",
            lambda: self.wrapped.claim(
                topics=topics, limit=limit, filters=filters, running=running
            ),
        )

    async def renew(self) -> None:
        await self._write("renew", self.wrapped.renew)

    async def release(self, job_id: str | None = None) -> None:
        name = "release" if job_id is not None else "release_lease"
        await self._write(name, lambda: self.wrapped.release(job_id))

    async def delete(self, job_id: str) -> bool:
        return await self._write("delete", lambda: self.wrapped.delete(job_id))

    async def prune(self, *, finished_before: float) -> int:
        return await self._write(
            "prune", lambda: self.wrapped.prune(finished_before=finished_before)
        )

    # -- passed straight through ---------------------------------------------------------

    async def answer(self, token_hash: str, answer: str) -> Verdict:
        return await self.wrapped.answer(token_hash, answer)

    async def get(self, job_id: str) -> Job | None:
        return await self.wrapped.get(job_id)

    async def unreadable(self) -> list[UnreadableJob]:
        return await self.wrapped.unreadable()

    async def filter_keys(self, topics: Collection[str]) -> dict[tuple[str, str], int]:
        return await self.wrapped.filter_keys(topics)

    async def unfinished(self) -> list[Job]:
        return await self.wrapped.unfinished()

    async def unfinished_instances(self) -> set[str]:
        return await self.wrapped.unfinished_instances()

    async def jobs(self, *, states: Collection[JobState] | None = None) -> list[Job]:
        return await self.wrapped.jobs(states=states)

    async def counts(self) -> dict[JobState, int]:
        return await self.wrapped.counts()

    async def close(self) -> None:
        await self.wrapped.close()


def unwrapped(journal: Journal) -> Journal:
    """The journal a :class:`FailpointJournal` wraps (``journal`` itself when it is none)."""
    return journal.wrapped if isinstance(journal, FailpointJournal) else journal
