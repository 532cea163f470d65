"""Reply jobs: run the work, deliver the reply, and raise the incident when it cannot be
delivered (the states: :mod:`camunda_relay.replies.job`); :mod:`~camunda_relay.worker.intake`
records and completes a fetched task first.

The job runs under the run key ``job:<id>``, the one runner a job has however it was
started (fetched, resumed after a restart, taken over, adopted by the reconciler). Each step
saves the job before the next begins; a journal that cannot be written is retried until it
answers (nothing goes on unrecorded: :mod:`~camunda_relay.worker.keeping`). Every wait
answers a stop: the job then stays in the journal as it was last saved and resumes at the
next start (or at a peer).

An answer to a reply token accepted while its attempt ran is a promise: a step that would go
past it (a new attempt, the handler's own result, its failure, its deferral) is refused by
the journal, and the runner takes the answer instead (:meth:`Replies._take`); a job resumed
with a stored answer takes it before anything else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import timedelta

from camunda_relay.errors import EngineError, JournalError
from camunda_relay.replies.correlator import Correlator
from camunda_relay.replies.incidents import Incidents
from camunda_relay.replies.job import Job, JobState
from camunda_relay.replies.tokens import new_token
from camunda_relay.router import Registration
from camunda_relay.task import BpmnError, DeferReply, RetryLater, Task
from camunda_relay.worker.cancellation import Cancelled, Scope, Watcher, cancelled
from camunda_relay.worker.context import Context
from camunda_relay.worker.keeping import Answered, Keeper, Parked, Stopped, TakenOver
from camunda_relay.worker.outcomes import Outcomes, describe, for_log
from camunda_relay.worker.plain import call_handler
from camunda_relay.worker.slots import Slot

__all__ = ["Replies", "Stopped", "TakenOver", "with_token"]

log = logging.getLogger(__name__)


# States in which a stored answer is taken before anything else (no attempt goes past it).
_TAKES_ANSWER = frozenset({JobState.RECORDED, JobState.ACKNOWLEDGED, JobState.DEFERRED})


def with_token(job: Job) -> Job:
    """``job`` with a fresh reply token (kept in memory) and its hash."""
    token, digest = new_token()
    return dataclasses.replace(job, token_hash=digest, reply_token=token)


def _attempt(job: Job, attempts: int) -> Job:
    """``job`` acknowledged with ``attempts`` and a fresh reply token for that attempt, not
    carrying an answer: its save is refused when one is stored (:class:`Answered`)."""
    fresh = with_token(job)
    return fresh.advance(JobState.ACKNOWLEDGED, attempts=attempts, answer=None)


class Replies:
    def __init__(
        self,
        ctx: Context,
        outcomes: Outcomes,
        correlator: Correlator,
        incidents: Incidents,
        watcher: Watcher,
    ) -> None:
        self._ctx = ctx
        self._outcomes = outcomes
        self._correlator = correlator
        self._incidents = incidents
        self._keeper = Keeper(ctx)
        self._watcher = watcher

    # -- starting ------------------------------------------------------------------------

    def start(self, job: Job, registration: Registration, slot: Slot, *, counted: bool) -> bool:
        """Run ``job`` under its key with ``slot`` (released when it ends); False, and the
        slot released, when the job runs here already."""
        started = self._ctx.runs.start(f"job:{job.id}", self._run(job, registration, slot, counted))
        if not started:
            slot.release()
        return started

    async def acknowledged(self, job: Job, *, completed_here: bool = True) -> Job:
        """The task is completed: on record, with the first attempt. ``completed_here``: by
        this call's own completion (not told from history after a restart)."""
        if completed_here:
            await self._ctx.failpoints.hit("after_complete_before_work")
        # One write for "acknowledged" and "first attempt started", not waited on to reach
        # the disk: lost with the machine, the job is back in "recorded", as a crash just
        # after the completion leaves it (history tells it was completed; the work runs).
        # The attempt's token was recorded with the job (synced): a token its handler hands
        # out is known even then. A job resumed in "recorded" gets a new one, synced here.
        recorded_token = job.reply_token is not None and job.attempts == 0
        first = (
            job.advance(JobState.ACKNOWLEDGED, attempts=1, answer=None)
            if recorded_token
            else _attempt(job, 1)
        )
        job = await self.keep(first, synced=not recorded_token)
        self._ctx.stats.completed += 1
        log.debug("task completed; work runs in the background", extra=job.task.log_context())
        return job

    # -- the job's runner ----------------------------------------------------------------

    async def _run(self, job: Job, registration: Registration, slot: Slot, counted: bool) -> None:
        with slot, self._ctx.tracing.within(job.task):
            try:
                await self._carry_on(job, registration, counted=counted)
            except TakenOver:
                self._ctx.stats.taken_over += 1
                log.warning(
                    "this worker lost its journal lease and another worker holds the job "
                    "now; leaving the job to it",
                    extra=job.task.log_context(),
                )
            except (Stopped, Parked):
                pass
            except Exception:
                log.exception(
                    "reply job ended with an unexpected error; given back to the journal",
                    extra=job.task.log_context(),
                )
                await self.release(job.id, job.task)

    async def release(self, job_id: str, task: Task) -> None:
        try:
            await self._ctx.journal.release(job_id)
        except JournalError as error:
            log.error("could not give the job back (%s)", error, extra=task.log_context())

    async def _carry_on(self, job: Job, registration: Registration, *, counted: bool) -> None:
        while not job.state.finished:
            try:
                job = await self._step(job, registration, counted=counted)
            except Answered as answered:  # a step would have gone past a stored answer
                job = answered.job
            counted = False

    async def _step(self, job: Job, registration: Registration, *, counted: bool) -> Job:
        if job.answer is not None and job.state in _TAKES_ANSWER:
            return await self._take(job, registration)
        if job.state is JobState.RECORDED:
            return await self._decide(job)
        if job.state is JobState.ACKNOWLEDGED:
            return await self._work(job, registration, counted=counted)
        if job.state is JobState.DEFERRED:
            return await self._answered(job, registration)
        if job.state is JobState.DONE:
            return await self._deliver(job)
        assert job.state is JobState.FAILING
        return await self._raise_incident(job)

    async def _decide(self, job: Job) -> Job:
        """Ask history, with backoff, whether the recorded job's task was completed."""
        ctx = self._ctx
        attempt = 0
        while True:
            if ctx.history_full is False:
                log.warning(
                    "the engine keeps no external-task history: whether this task was "
                    "completed cannot be told; going on as completed",
                    extra=job.task.log_context(),
                )
                return await self.acknowledged(job, completed_here=False)
            completed = await self._outcomes.completion_confirmed(job.task)
            if completed:
                return await self.acknowledged(job, completed_here=False)
            if completed is False:
                self._ctx.stats.dropped += 1
                return await self.keep(job.advance(JobState.DROPPED, error="not completed"))
            await self._wait(ctx.poll_backoff.delay(attempt))
            attempt += 1

    async def _work(self, job: Job, registration: Registration, *, counted: bool) -> Job:
        """Run the handler until it succeeds or the retries are used up, watched for its
        instance going away meanwhile (then the job ends ``cancelled``). ``counted``: the
        first attempt is on record already (saved with the acknowledgement)."""
        with self._watcher.watching(job) as scope:
            return await self._attempts(job, registration, counted=counted, scope=scope)

    async def _attempts(
        self, job: Job, registration: Registration, *, counted: bool, scope: Scope
    ) -> Job:
        ctx = self._ctx
        policy = registration.retries if registration.retries is not None else ctx.settings.retries
        pause = registration.retry_timeout or ctx.settings.retry_timeout
        grace = ctx.settings.cancel_grace.total_seconds()
        while True:
            # Every attempt is on record, with its token's hash, before it starts.
            if not counted or job.reply_token is None:
                job = await self.keep(_attempt(job, job.attempts + (0 if counted else 1)))
            counted = False
            if scope.requested:  # cancelled during the pause between attempts
                return await self._cancelled(job, scope.reason)
            try:
                await ctx.failpoints.hit("mid_work")
                task = dataclasses.replace(
                    job.task, reply_token=job.reply_token, cancelled=scope.signal
                )
                task = ctx.client.bind_files(task)  # Files read back from the journal
                with ctx.tracing.handler(task, job.attempts):
                    result = await scope.run(
                        call_handler(ctx, registration, task),
                        is_async=registration.is_async,
                        grace=grace,
                        clock=ctx.clock,
                    )
            except asyncio.CancelledError:
                raise
            except Cancelled as stop:
                return await self._cancelled(job, stop.reason)
            except DeferReply:
                return await self._defer(job, registration)
            except BpmnError as error:
                return await self._failing(
                    job,
                    f"BPMN error {error.code!r} cannot be thrown by a reply topic: its task was "
                    "already completed; model the error path after the catch event instead",
                )
            except Exception as error:  # noqa: BLE001 - a handler's error is an outcome
                wait = pause
                if isinstance(error, RetryLater):
                    if error.retries is not None:  # retries left from now on
                        policy = job.attempts + error.retries - 1
                    wait = error.after if error.after is not None else pause
                if job.attempts > policy:
                    return await self._failing(
                        job,
                        f"work failed after {job.attempts} attempts ({type(error).__name__})",
                        detail=describe(error),
                    )
                log.warning(
                    "work failed (%s), attempt %d of %d",
                    for_log(error, ctx.settings.log_error_details),
                    job.attempts,
                    policy + 1,
                    extra=job.task.log_context(),
                )
                await self._wait(wait.total_seconds())
                continue
            now = ctx.clock.wall()
            return await self.keep(
                job.advance(
                    JobState.DONE,
                    at=now,
                    result=dict(result),
                    deadline=now + self._allowed(registration).total_seconds(),
                )
            )

    def _allowed(self, registration: Registration) -> timedelta:
        reply = registration.reply
        return (reply.deadline if reply else None) or self._ctx.settings.reply_deadline

    async def _cancelled(self, job: Job, reason: str) -> Job:
        """The instance no longer waits: the job ends ``cancelled`` (no message, no incident)."""
        job = await self.keep(job.advance(JobState.CANCELLED, error=reason, reply_token=None))
        cancelled(self._ctx, job, reason)
        return job

    # -- deferred replies ----------------------------------------------------------------

    async def _defer(self, job: Job, registration: Registration) -> Job:
        """The handler deferred the reply: park the job with its deadline (one write); go on
        at once when its token was answered meanwhile."""
        now = self._ctx.clock.wall()
        deadline = now + self._allowed(registration).total_seconds()
        job = await self._keeper.park(
            job.advance(JobState.DEFERRED, at=now, deadline=deadline, reply_token=None)
        )
        self._ctx.stats.replies_deferred += 1
        log.info(
            "reply %r deferred to its token's holder", job.message, extra=job.task.log_context()
        )
        if job.answer is not None:
            return await self._take(job, registration)
        raise Parked

    async def _answered(self, job: Job, registration: Registration) -> Job:
        """A deferred job: the answer's outcome, an incident past the deadline, else parked."""
        if job.answer is not None:
            return await self._take(job, registration)
        if job.deadline is not None and job.deadline <= self._ctx.clock.wall():
            return await self._failing(job, "the deferred reply got no answer within its deadline")
        job = await self._keeper.park(job)
        if job.answer is not None:
            return await self._take(job, registration)
        raise Parked

    async def _take(self, job: Job, registration: Registration) -> Job:
        """Take the answer stored for the job: its reply is what gets delivered, its failure
        what the incident says, whatever became of the attempt that handed the token out."""
        answer = job.answer
        assert answer is not None
        if job.state is JobState.RECORDED:  # its acknowledgement was lost with a machine
            job = job.advance(JobState.ACKNOWLEDGED, at=job.updated_at)
        self._ctx.tracing.answered(job)
        if answer.failure is not None:
            return await self._failing(
                job, "the deferred reply was answered with a failure", detail=answer.failure
            )
        now = self._ctx.clock.wall()
        deadline = now + self._allowed(registration).total_seconds()
        log.info("deferred reply %r answered", job.message, extra=job.task.log_context())
        return await self.keep(
            job.advance(
                JobState.DONE, at=now, result=dict(answer.variables or {}), deadline=deadline
            )
        )

    async def _deliver(self, job: Job) -> Job:
        ctx = self._ctx
        await ctx.failpoints.hit("after_work_before_correlate")
        with ctx.tracing.correlate(job) as span:
            outcome = await self._correlator.deliver(span.carrying(job), wait=ctx.stop.wait)
            span.outcome(outcome.state.value)
        if outcome.state is JobState.DONE:  # stopped while retrying
            await self.keep(outcome)
            raise Stopped
        if outcome.state is JobState.FAILING:
            return await self._failing(outcome, outcome.error or "not delivered", advanced=True)
        if outcome.state is JobState.CANCELLED:
            job = await self.keep(outcome)
            cancelled(ctx, job, outcome.error or "the process instance no longer waits")
            return job
        await ctx.failpoints.hit("after_correlate_before_journal")
        # Not waited on to reach the disk: lost with the machine, the job is back in "done",
        # as a crash just before this write leaves it (history confirms the delivery).
        job = await self.keep(outcome, synced=False)
        ctx.stats.replies_delivered += 1
        log.info("reply %r delivered", job.message, extra=job.task.log_context())
        return job

    async def _failing(
        self, job: Job, reason: str, *, detail: str | None = None, advanced: bool = False
    ) -> Job:
        """The job failed for good: ``reason`` (no values) is logged and kept; ``detail`` (a
        handler's exception text) is kept for the incident, logged only when asked."""
        shown = f"{reason}: {detail}" if detail and self._ctx.settings.log_error_details else reason
        log.error("reply job failed: %s", shown, extra=job.task.log_context())
        if advanced:
            return await self.keep(job)
        return await self.keep(job.advance(JobState.FAILING, error=reason, error_detail=detail))

    async def _raise_incident(self, job: Job) -> Job:
        """Raise the failing job's incident, retried until it lands; then the job is failed."""
        ctx, extra = self._ctx, job.task.log_context()
        reason = job.error or "the reply cannot be delivered"
        if job.error_detail:  # the engine is where an operator is meant to read it
            reason = f"{reason}: {job.error_detail}"
        attempt = 0
        while True:
            try:
                with ctx.tracing.incident(job) as span:
                    landed = await self._incidents.for_reply(
                        process_instance_id=job.task.process_instance_id,
                        message_name=job.message,
                        reason=reason,
                        configuration=job.id,
                    )
                    span.outcome("raised" if landed else "no execution")
            except EngineError as error:
                if attempt == 0:
                    log.warning(
                        "could not raise the incident (%s); retrying until it lands",
                        type(error).__name__,
                        extra=extra,
                    )
                await self._wait(ctx.poll_backoff.delay(attempt))
                attempt += 1
                continue
            if not landed:
                log.error("no execution left to carry the incident", extra=extra)
            ctx.stats.replies_failed += 1
            return await self.keep(job.advance(JobState.FAILED))

    # -- plumbing ------------------------------------------------------------------------

    async def _wait(self, seconds: float) -> None:
        await self._keeper.wait(seconds)

    async def keep(self, job: Job, *, synced: bool = True) -> Job:
        """:meth:`Keeper.keep <camunda_relay.worker.keeping.Keeper.keep>`: save ``job``."""
        return await self._keeper.keep(job, synced=synced)
