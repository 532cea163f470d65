"""Work that stops when its instance does: cancelling a running handler, and the watcher that
tells the worker's reply jobs whose instances no longer wait for their replies.

A handler runs inside a :class:`Scope`. :meth:`Scope.cancel` sets the task's
:class:`~camunda_relay.task.Cancellation` (what a plain function handler checks or waits on)
and cancels an ``async`` handler (:class:`asyncio.CancelledError` where it awaits). Either
gets ``CAMUNDA_CANCEL_GRACE`` to clean up; then the worker stops waiting for it (a plain
function's thread runs on until it returns: Python cannot stop a thread) and
:meth:`Scope.run` raises :class:`Cancelled`. A handler that returned before the cancellation
reached it has its result kept: its delivery then finds the instance gone.

The :class:`Watcher` asks, every ``CAMUNDA_CANCEL_CHECK_INTERVAL`` (30 s by default; 0: never),
about every reply job whose handler runs here and every parked deferred job of this worker's
topics, in one batched question (:class:`~camunda_relay.replies.cancellation.InstanceCheck`).
A running job's scope is cancelled (its runner then ends the job ``cancelled``); a parked
deferred job is saved ``cancelled`` at once (its token then answers "the process instance
was cancelled"). A round the engine or the journal does not answer decides nothing. So a
handler learns of the cancellation within one interval plus one round's queries.

Plain topics need no watcher: their lock is extended while the handler runs, and an
``extendLock`` answered 404 (the task is gone: its instance cancelled, deleted or moved on)
cancels the scope the same way (:mod:`~camunda_relay.worker.plain`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from camunda_relay.clock import Clock
from camunda_relay.errors import EngineError, JournalError
from camunda_relay.replies.cancellation import InstanceCheck
from camunda_relay.replies.job import Job, JobState
from camunda_relay.task import Cancellation
from camunda_relay.worker.context import Context

__all__ = ["Cancelled", "Scope", "Watcher"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Cancelled(Exception):
    """The handler was cancelled: its instance no longer waits for the work (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Scope:
    """One attempt's cancellation: the event its task carries, and the request to stop."""

    def __init__(self, job_id: str = "") -> None:
        self.job_id = job_id
        self.signal = Cancellation()
        self._requested = asyncio.Event()
        self.requested_at: float | None = None  # the clock's monotonic time of the request

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    @property
    def reason(self) -> str:
        return self.signal.reason or "cancelled"

    def cancel(self, reason: str, *, at: float | None = None) -> None:
        """Ask the handler to stop; once (a second call changes nothing)."""
        if self.requested:
            return
        self.requested_at = at
        self.signal.set(reason)
        self._requested.set()

    async def run(
        self, work: Coroutine[Any, Any, T], *, is_async: bool, grace: float, clock: Clock
    ) -> T:
        """Run ``work`` (the handler's call) to its end, unless cancelled first: then the
        handler gets ``grace`` seconds, and :class:`Cancelled` is raised."""
        runner = asyncio.ensure_future(work)
        asked = asyncio.ensure_future(self._requested.wait())
        try:
            await asyncio.wait({runner, asked}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the worker stops: the handler with it
            runner.cancel()
            raise
        finally:
            asked.cancel()
        if runner.done():
            return runner.result()
        if is_async:
            runner.cancel()  # a plain function's thread cannot be: it reads its event
        timer = asyncio.ensure_future(clock.sleep(grace))
        try:
            await asyncio.wait({runner, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if not runner.done():
            log.warning(
                "the cancelled handler did not end within CAMUNDA_CANCEL_GRACE (%g s); "
                "no longer waited for",
                grace,
                extra={"job_id": self.job_id},
            )
            runner.cancel()
        runner.add_done_callback(_consume)
        raise Cancelled(self.reason)


def _consume(future: asyncio.Future[Any]) -> None:
    """Read an abandoned handler's outcome, so that asyncio does not report it as lost."""
    if not future.cancelled():
        future.exception()


class Watcher:
    """Cancels the reply jobs whose instances no longer wait (see the module docstring)."""

    def __init__(self, ctx: Context, check: InstanceCheck) -> None:
        self._ctx = ctx
        self._check = check
        self._scopes: dict[str, tuple[Job, Scope]] = {}

    @contextmanager
    def watching(self, job: Job) -> Iterator[Scope]:
        """A scope for ``job``'s running attempt, watched until the block ends."""
        scope = Scope(job.id)
        self._scopes[job.id] = (job, scope)
        try:
            yield scope
        finally:
            if self._scopes.get(job.id, (None, None))[1] is scope:
                del self._scopes[job.id]

    @property
    def interval(self) -> float:
        return self._ctx.settings.cancel_check_interval.total_seconds()

    async def keep_watching(self) -> None:
        """A round every interval until the worker stops (none when the interval is 0)."""
        if self.interval <= 0:
            await self._ctx.stop.until()
            return
        while await self._ctx.stop.wait(self.interval):
            try:
                await self.round()
            except Exception:  # one bad round must not end the loop
                log.exception("the cancellation check failed; trying again next round")

    async def round(self) -> int:
        """One round: ask about every watched job, cancel those whose instances are gone;
        how many were cancelled."""
        ctx = self._ctx
        parked = await self._parked()
        jobs = [job for job, _ in self._scopes.values()] + parked
        if not jobs:
            return 0
        try:
            gone = await self._check.gone(jobs)
        except EngineError as error:
            log.warning(
                "could not ask the engine whether instances still wait (%s); nothing "
                "cancelled this round",
                type(error).__name__,
            )
            return 0
        cancelled = 0
        now = ctx.clock.monotonic()
        for job_id, reason in gone.items():
            running = self._scopes.get(job_id)
            if running is not None:  # its runner ends the job when the handler has stopped
                running[1].cancel(reason, at=now)
                cancelled += 1
        for job in parked:
            if job.id in gone and await self._cancel_parked(job, gone[job.id]):
                cancelled += 1
        return cancelled

    async def _parked(self) -> list[Job]:
        """The deferred jobs of this worker's reply topics that no runner here holds."""
        ctx = self._ctx
        topics = set(ctx.reply_topics)
        if not topics:
            return []
        try:
            deferred = await ctx.journal.jobs(states=[JobState.DEFERRED])
        except JournalError as error:
            log.debug("deferred jobs not read for the cancellation check (%s)", error)
            return []
        return [
            job for job in deferred if job.task.topic in topics and f"job:{job.id}" not in ctx.runs
        ]

    async def _cancel_parked(self, job: Job, reason: str) -> bool:
        ctx = self._ctx
        if f"job:{job.id}" in ctx.runs:  # claimed here meanwhile: its runner decides
            return False
        try:
            saved = await ctx.journal.save(job.advance(JobState.CANCELLED, error=reason))
        except JournalError as error:
            log.warning("could not cancel a deferred job (%s)", error, extra=job.task.log_context())
            return False
        if saved:  # else another worker holds it now (answered and claimed): it decides
            cancelled(ctx, job, reason)
        return saved


def cancelled(ctx: Context, job: Job, reason: str) -> None:
    """Count and log a reply job that ended ``cancelled``: one INFO line with its ids."""
    ctx.stats.replies_cancelled += 1
    log.info(
        "reply job cancelled, no message sent: %s (job %s, process instance %s)",
        reason,
        job.id,
        job.task.process_instance_id,
        extra=job.task.log_context(),
    )
