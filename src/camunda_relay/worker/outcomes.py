"""Telling the engine what became of a task: complete (retried, confirmed from history when
an answer was lost), failure with decreasing retries, BPMN error. Shared by plain and reply
topics; every wait answers a stop."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Mapping

from camunda_relay.errors import EngineError, InvalidInput, NotFound, TaskNotLocked
from camunda_relay.router import Registration
from camunda_relay.task import BpmnError, RetryLater, Task
from camunda_relay.worker.context import Context

__all__ = ["Outcomes", "describe", "for_log"]

log = logging.getLogger(__name__)

_MAX_ERROR_MESSAGE = 500
_COMPLETE_ATTEMPTS = 8


def describe(error: BaseException) -> str:
    """The error's type and text, bounded as Camunda's own clients bound ``errorMessage``.

    The text of a handler's exception may quote a variable's value (``int(task.variables
    ["secret"])``): it goes to the engine (the failure's ``errorMessage``, the incident),
    where an operator with rights is meant to read it, and to the journal's job (a file
    readable by its owner only, which holds the variables anyway); never to a log line or
    the CLI's output unless asked (:func:`for_log`, ``pending --show-errors``).
    """
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _MAX_ERROR_MESSAGE else text[: _MAX_ERROR_MESSAGE - 1] + "…"


def for_log(error: BaseException, details: bool) -> str:
    """What a log line says of a handler's error: its type; with ``details``
    (``CAMUNDA_LOG_ERROR_DETAILS=true``) its bounded text too."""
    return describe(error) if details else type(error).__name__


class Outcomes:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def complete(
        self,
        task: Task,
        result: Mapping[str, object] | None,
        *,
        local: Mapping[str, object] | None = None,
    ) -> bool | None:
        """Complete the task, retrying transient errors. False when the task is not ours (or
        not completed); None when no try was answered and history cannot tell whether one
        went through (a lost answer, then an outage). :class:`InvalidInput` passes through.
        The job's trace context goes with the completion (tracing on)."""
        tracing = self._ctx.tracing
        with tracing.complete(task) as span:
            done = await self._complete(task, tracing.carried(task, result), local)
            span.outcome({True: "completed", False: "not completed", None: "uncertain"}[done])
            return done

    async def _complete(
        self,
        task: Task,
        result: Mapping[str, object] | None,
        local: Mapping[str, object] | None,
    ) -> bool | None:
        ctx, extra = self._ctx, task.log_context()
        uncertain = False
        for attempt in range(_COMPLETE_ATTEMPTS):
            try:
                await ctx.client.complete(task.id, ctx.worker_id, result or None, local or None)
                return True
            except TaskNotLocked:
                log.warning("lock lost before completion; task dropped", extra=extra)
                return False
            except NotFound:
                if uncertain:
                    # An earlier try may have completed it (its response lost). When history
                    # cannot tell, go on as completed: a reply that finds no instance ends
                    # in an incident, a dropped one in a silent forever-wait.
                    confirmed = await self.completion_confirmed(task)
                    if confirmed is None:
                        log.warning("completion unconfirmed; treated as done", extra=extra)
                    if confirmed is not False:
                        return True
                log.warning("task gone before completion (cancelled?); dropped", extra=extra)
                return False
            except InvalidInput:
                raise
            except EngineError as error:
                if not error.retryable:
                    log.error("completion refused: %s", error.message, extra=extra)
                    return False
                uncertain = True
                if not await ctx.stop.wait(ctx.poll_backoff.delay(attempt)):
                    break
        if uncertain:
            confirmed = await self.completion_confirmed(task)
            if confirmed:
                log.info("completion confirmed from history after failed tries", extra=extra)
                return True
            if confirmed is None:
                log.error(
                    "completion not answered and history cannot tell whether a try went "
                    "through; decided from history later",
                    extra=extra,
                )
                return None
        log.error("completion failed; task left to its lock", extra=extra)
        return False

    async def completion_confirmed(self, task: Task, attempts: int = 5) -> bool | None:
        """Whether history shows the task completed; None when it cannot be told (history
        not readable now, or an engine that keeps no external-task history)."""
        ctx = self._ctx
        for attempt in range(attempts):
            try:
                completed = await ctx.client.external_task_completed(task.id)
            except EngineError as error:
                if not error.retryable or not await ctx.stop.wait(ctx.poll_backoff.delay(attempt)):
                    return None
                continue
            if not completed and ctx.history_full is False:
                return None  # this engine's history cannot show it
            return completed
        return None

    async def failure(self, task: Task, registration: Registration, error: Exception) -> None:
        """Report a failure with one retry less (0 left: the engine raises an incident)."""
        ctx = self._ctx
        policy = registration.retries if registration.retries is not None else ctx.settings.retries
        retries = policy if task.retries is None else max(task.retries - 1, 0)
        timeout = registration.retry_timeout or ctx.settings.retry_timeout
        details = "".join(traceback.format_exception(error))
        if isinstance(error, RetryLater):
            retries = error.retries if error.retries is not None else retries
            timeout = error.after if error.after is not None else timeout
            details = error.details if error.details is not None else details
        await ctx.client.handle_failure(
            task.id,
            ctx.worker_id,
            error_message=describe(error),
            error_details=details,
            retries=retries,
            retry_timeout=timeout,
        )
        ctx.stats.failures_reported += 1
        log.warning(
            "handler failed (%s); %d retries left",
            for_log(error, ctx.settings.log_error_details),
            retries,
            extra=task.log_context(),
        )

    async def bpmn_error(self, task: Task, error: BpmnError) -> None:
        await self._ctx.client.handle_bpmn_error(
            task.id,
            self._ctx.worker_id,
            error_code=error.code,
            error_message=error.message,
            variables=error.variables or None,
        )
        self._ctx.stats.bpmn_errors += 1
        log.info("BPMN error %r thrown", error.code, extra=task.log_context())

    async def give_back(self, task: Task) -> None:
        """Unlock a task nobody here will run, so that it is offered again at once."""
        try:
            await self._ctx.client.unlock(task.id)
        except EngineError as error:
            log.warning(
                "could not give the task back (%s); it is offered again when its lock expires",
                type(error).__name__,
                extra=task.log_context(),
            )

    async def report(self, report: Awaitable[None], task: Task) -> None:
        """Send a failure or BPMN error; a task no longer ours, or an engine that cannot be
        reached, leaves the task to its lock (it is offered again when the lock expires)."""
        try:
            await report
        except (TaskNotLocked, NotFound):
            log.warning("task no longer ours; outcome not reported", extra=task.log_context())
        except EngineError as error:
            log.error(
                "could not report the outcome (%s); the lock will expire and the task "
                "will be offered again",
                type(error).__name__,
                extra=task.log_context(),
            )
