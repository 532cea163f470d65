"""Reply topics, the fetched task: record the job before anything else, complete the task at
once, and hand the job to its runner (:mod:`~camunda_relay.worker.replies`).

A fetched task is handled under the run key ``task:<id>`` while it holds its lock; a task the
engine offers again after this worker completed it (the engine lost the completion) is
completed again without running the work.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from camunda_relay import variables
from camunda_relay.errors import JournalError
from camunda_relay.replies.job import COMPLETED_BEFORE, Job, JobState
from camunda_relay.router import CompleteVariables, Registration
from camunda_relay.task import Task
from camunda_relay.worker.context import Context
from camunda_relay.worker.outcomes import Outcomes
from camunda_relay.worker.replies import Replies, Stopped, TakenOver, with_token
from camunda_relay.worker.slots import Slot

__all__ = ["Intake"]

log = logging.getLogger(__name__)


class Intake:
    def __init__(self, ctx: Context, outcomes: Outcomes, jobs: Replies) -> None:
        self._ctx = ctx
        self._outcomes = outcomes
        self._jobs = jobs

    async def fetched(
        self, task: Task, registration: Registration, lock: Slot, reply: Slot
    ) -> None:
        """A reply task just fetched: record the job, complete the task, hand the job on.

        An unexpected error gives the job back to the journal (held by nobody), so the next
        claim round takes it up again instead of leaving it held and idle."""
        handed_on = False
        try:
            with lock, self._ctx.tracing.receive(task) as traced:
                job = await self._record_and_complete(traced, registration, lock)
            if job is not None:
                handed_on = True
                self._jobs.start(job, registration, reply, counted=True)
        except TakenOver:
            log.info(
                "the task's job is held by another worker whose lease runs; left to it (the "
                "task is offered again when its lock expires)",
                extra=task.log_context(),
            )
        except Stopped:
            pass
        except Exception:
            log.exception(
                "reply task ended with an unexpected error; its job is given back to the journal",
                extra=task.log_context(),
            )
            await self._jobs.release(task.job_id, task)
        finally:
            if not handed_on:
                reply.release()

    async def _record_and_complete(
        self, task: Task, registration: Registration, lock: Slot
    ) -> Job | None:
        ctx = self._ctx
        assert registration.reply is not None
        reply = registration.reply
        # The first attempt's reply token is recorded with the job (a synced write), before
        # its handler can hand it out.
        job = with_token(
            Job(
                task=task,
                message=reply.message,
                by_business_key=reply.by_business_key,
                filter_key=registration.filter_key,
            )
        )
        await ctx.failpoints.hit("after_fetch")
        try:
            fresh = await ctx.journal.record(job)
            known = None if fresh else await ctx.journal.get(job.id)
        except JournalError as error:
            ctx.journal_health.failed(error, "recorded a job")
            ctx.stats.journal_errors += 1
            await self._outcomes.give_back(task)
            return None
        if known is not None and known.state in COMPLETED_BEFORE:
            await self._complete_again(known, registration, lock)
            return None
        if f"job:{job.id}" in ctx.runs:
            return None  # its runner here decides (the lock runs out, the task comes back)
        if known is not None:  # offered again after it was dropped or failed: afresh
            job = await self._jobs.keep(
                with_token(known).advance(
                    JobState.RECORDED,
                    task=task,
                    attempts=0,
                    result=None,
                    error=None,
                    error_detail=None,
                    filter_key=registration.filter_key,
                )
            )
        await ctx.failpoints.hit("after_record")
        try:
            values, local = _completion(registration, task, ctx.client.json_variables)
            completed = await self._outcomes.complete(task, values, local=local)
        except Exception as error:  # noqa: BLE001 - a bad completion is reported, never lost
            await self._outcomes.report(self._outcomes.failure(task, registration, error), task)
            completed = False
        lock.release()
        if completed is False:
            await self._jobs.keep(job.advance(JobState.DROPPED, error="not completed"))
            ctx.stats.dropped += 1
            return None
        if completed is None:
            return job  # stays recorded: the job's runner asks history
        return await self._jobs.acknowledged(job)

    async def _complete_again(self, known: Job, registration: Registration, lock: Slot) -> None:
        """The engine offers a task this worker completed: it lost the completion (a database
        restored from a backup, an H2 engine killed before it wrote its last commits). The
        work is not run again; the task is completed again so that the instance moves on to
        the catch event, and a reply already delivered is delivered again (the engine lost it
        too). A job still running carries on (its reply now finds the instance waiting)."""
        task = known.task
        log.warning(
            "the engine offers a task this worker completed (job %s): it lost the "
            "completion; completing it again without running the work",
            known.state.value,
            extra=task.log_context(),
        )
        try:
            values, local = _completion(registration, task, self._ctx.client.json_variables)
            completed = await self._outcomes.complete(task, values, local=local)
        except Exception:  # noqa: BLE001 - reported when the job itself was completed
            completed = False
        lock.release()
        if completed and known.state is JobState.DELIVERED:
            again = known.advance(JobState.DONE)
            if await self._ctx.journal.save(again):
                self._jobs.start(again, registration, self._ctx.slots.replies.take(), counted=False)


def _completion(
    registration: Registration, task: Task, json_variables: bool | None = None
) -> tuple[Mapping[str, object] | None, Mapping[str, object] | None]:
    """The reply's ``complete_variables`` and ``complete_local_variables`` for this task,
    each checked as sendable (None when not given)."""
    reply = registration.reply
    if reply is None:
        return None, None
    return (
        _produced(reply.complete_variables, task, json_variables),
        _produced(reply.complete_local_variables, task, json_variables),
    )


def _produced(
    values: CompleteVariables | None, task: Task, json_variables: bool | None
) -> Mapping[str, object] | None:
    if values is None:
        return None
    produced = values(task) if callable(values) else values
    variables.encode_all(produced, json_variables=json_variables is not False)
    return produced
