"""A reply job's runner writing to the journal: every save and every parking is retried until
the journal answers (nothing goes on unrecorded), and a write the journal refuses says why.

A refusal is one of two things: another worker holds the job now (this one lost its lease:
:class:`TakenOver`), or an answer to the job's reply token is stored that the job being
saved does not carry (:class:`Answered`: the attempt would go past an accepted answer; its
runner takes the answer instead, see :meth:`~camunda_relay.journal.base.Journal.save`).
"""

from __future__ import annotations

from camunda_relay.errors import JournalError
from camunda_relay.replies.job import Job
from camunda_relay.worker.context import Context

__all__ = ["Answered", "Keeper", "Parked", "Stopped", "TakenOver"]


class TakenOver(Exception):
    """The journal refused a save: another worker holds the job now (this one lost its lease)."""


class Stopped(Exception):
    """The worker stops while a step waits: the job stays as last saved."""


class Parked(Exception):
    """The job waits for its reply token's answer, in the journal: the runner ends."""


class Answered(Exception):
    """The journal refused a save that would go past a stored answer: ``job`` is the job as
    stored, with the answer, for its runner to take."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.id)
        self.job = job


class Keeper:
    """The journal writes of reply jobs' runners, retried with the poll backoff."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def keep(self, job: Job, *, synced: bool = True) -> Job:
        """Save ``job``, retrying while the journal cannot be written; :class:`TakenOver`
        when another worker holds it now, :class:`Answered` when an answer is stored that
        ``job`` does not carry, :class:`Stopped` at a stop meanwhile. ``synced``: see
        :meth:`~camunda_relay.journal.base.Journal.save`."""
        attempt = 0
        while True:
            try:
                saved = await self._ctx.journal.save(job, synced=synced)
            except JournalError as error:
                await self._failed(error, "saved a job", attempt)
                attempt += 1
                continue
            self._answered()
            if not saved:
                raise await self._refused(job)
            return job

    async def park(self, job: Job) -> Job:
        """Park the deferred job (:meth:`~camunda_relay.journal.base.Journal.park`, one
        write), retrying while the journal cannot be written: the job as stored, with the
        answer that came meanwhile (then held here). :class:`TakenOver` when another worker
        holds it now."""
        attempt = 0
        while True:
            try:
                parked = await self._ctx.journal.park(job)
            except JournalError as error:
                await self._failed(error, "parked a job", attempt)
                attempt += 1
                continue
            self._answered()
            if parked is None:
                raise TakenOver(job.id)
            return parked

    async def wait(self, seconds: float) -> None:
        """Wait ``seconds``; :class:`Stopped` when the worker stops meanwhile."""
        if not await self._ctx.stop.wait(seconds):
            raise Stopped

    async def _refused(self, job: Job) -> Exception:
        """Why the journal refused to save ``job``: an answer it does not carry, else another
        worker holds it now."""
        if job.answer is not None:
            return TakenOver(job.id)
        attempt = 0
        while True:
            try:
                stored = await self._ctx.journal.get(job.id)
            except JournalError as error:
                await self._failed(error, "read a job", attempt)
                attempt += 1
                continue
            if stored is not None and stored.answer is not None:
                return Answered(stored)
            return TakenOver(job.id)

    async def _failed(self, error: JournalError, doing: str, attempt: int) -> None:
        ctx = self._ctx
        ctx.journal_health.failed(error, doing)
        ctx.stats.journal_errors += 1
        await self.wait(ctx.poll_backoff.delay(attempt))

    def _answered(self) -> None:
        if not self._ctx.journal_health.ok:
            self._ctx.journal_health.answered()
