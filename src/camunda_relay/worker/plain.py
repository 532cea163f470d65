"""Running a handler, and plain topics: run it while the lock is kept alive; a returned
mapping (or a :class:`~camunda_relay.task.Complete`, for local variables too) completes the
task, :class:`~camunda_relay.task.BpmnError` throws a BPMN error, any
other exception reports a failure with decreasing retries (0 left: an incident).

An ``extendLock`` answered 404 means the task is gone (its instance cancelled, deleted or
moved on by a boundary event): the handler is cancelled as a reply job's is
(:mod:`~camunda_relay.worker.cancellation`), and nothing is reported. A ``complete``
answered 404 (the handler ended first) is counted the same way."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
from collections.abc import Mapping
from datetime import timedelta

from camunda_relay import variables
from camunda_relay.errors import EngineError, NotFound, TaskNotLocked
from camunda_relay.router import Registration
from camunda_relay.task import BpmnError, Complete, Task
from camunda_relay.worker.cancellation import Cancelled, Scope
from camunda_relay.worker.context import Context
from camunda_relay.worker.outcomes import Outcomes
from camunda_relay.worker.slots import Slot

__all__ = ["Plain", "call_handler", "run_handler"]

log = logging.getLogger(__name__)


async def call_handler(
    ctx: Context, registration: Registration, task: Task
) -> Mapping[str, object]:
    """Run the handler (sync ones on the thread pool) and check what it returned."""
    result = await run_handler(ctx, registration, task)
    if isinstance(result, Complete):
        raise TypeError(
            f"handler {registration.name} returned a Complete: a reply topic's task is "
            "completed before its handler runs, so Complete is for plain topics only"
        )
    return result


async def run_handler(
    ctx: Context, registration: Registration, task: Task
) -> Mapping[str, object] | Complete:
    """Run the handler (sync ones on the thread pool); a mapping or a Complete, checked."""
    if registration.is_async:
        result = await registration.handler(task)  # type: ignore[misc]
    else:
        # In the caller's context (as asyncio.to_thread): the handler's own spans and log
        # lines belong to the task's trace.
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, registration.handler, task)
        result = await loop.run_in_executor(ctx.executor, call)
    if result is None:
        return {}
    json_variables = ctx.client.json_variables is not False
    if isinstance(result, Complete):
        for part in (result.variables, result.local_variables):
            variables.encode_all(part, json_variables=json_variables)
        return result
    if not isinstance(result, Mapping):
        raise TypeError(
            f"handler {registration.name} returned a {type(result).__name__}; "
            "expected a mapping of variables, a Complete or None"
        )
    # A value that cannot be sent fails here, naming it (Json too, on an engine without it).
    variables.encode_all(result, json_variables=json_variables)
    return result


class Plain:
    def __init__(self, ctx: Context, outcomes: Outcomes) -> None:
        self._ctx = ctx
        self._outcomes = outcomes

    async def run(self, task: Task, registration: Registration, lock: Slot) -> None:
        with lock, self._ctx.tracing.receive(task) as task:
            ctx = self._ctx
            duration = registration.lock_duration or ctx.settings.lock_duration
            scope = Scope(task.job_id)
            keeper = asyncio.ensure_future(self._keep_lock(task, duration, scope))
            try:
                try:
                    with ctx.tracing.handler(task, _attempt(ctx, registration, task)):
                        result = await scope.run(
                            run_handler(
                                ctx, registration, dataclasses.replace(task, cancelled=scope.signal)
                            ),
                            is_async=registration.is_async,
                            grace=ctx.settings.cancel_grace.total_seconds(),
                            clock=ctx.clock,
                        )
                except Cancelled as stop:
                    self._cancelled(task, stop.reason)
                    return
                except BpmnError as error:
                    keeper.cancel()
                    await self._outcomes.report(self._outcomes.bpmn_error(task, error), task)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - a handler's error is an outcome
                    keeper.cancel()
                    failure = self._outcomes.failure(task, registration, error)
                    await self._outcomes.report(failure, task)
                    return
                keeper.cancel()
                await self._complete(task, result)
            finally:
                keeper.cancel()

    async def _complete(self, task: Task, result: Mapping[str, object] | Complete) -> None:
        if isinstance(result, Complete):
            done = await self._outcomes.complete(
                task, result.variables, local=result.local_variables
            )
        else:
            done = await self._outcomes.complete(task, result)
        if done:
            self._ctx.stats.completed += 1
            log.debug("task completed", extra=task.log_context())

    def _cancelled(self, task: Task, reason: str) -> None:
        self._ctx.stats.tasks_cancelled += 1
        log.info(
            "handler cancelled, nothing reported: %s (task %s, process instance %s)",
            reason,
            task.id,
            task.process_instance_id,
            extra=task.log_context(),
        )

    async def _keep_lock(self, task: Task, lock: timedelta, scope: Scope) -> None:
        """Extend the lock at half its duration while the handler runs (during a shutdown's
        grace period too: the handler may still finish; it is cancelled with the handler).
        A 404 (the task is gone) cancels the handler; a 400 (another worker holds it now)
        leaves it running, its completion then refused."""
        ctx = self._ctx
        interval = max(lock.total_seconds() / 2, 0.5)
        while True:
            await ctx.clock.sleep(interval)
            try:
                await ctx.client.extend_lock(task.id, ctx.worker_id, lock)
            except NotFound:
                scope.cancel(GONE, at=ctx.clock.monotonic())
                return
            except TaskNotLocked:
                log.warning("lock lost while the handler runs", extra=task.log_context())
                return
            except EngineError as error:
                log.warning("lock extension failed (%s)", type(error).__name__)


GONE = "the task is gone: its process instance was cancelled, deleted or moved on"


def _attempt(ctx: Context, registration: Registration, task: Task) -> int:
    """The attempt a plain task's fetch is, as told by its retries left (1 on the first)."""
    if task.retries is None:
        return 1
    policy = registration.retries if registration.retries is not None else ctx.settings.retries
    return max(policy - task.retries + 1, 1)
