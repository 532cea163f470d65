"""Run a router's handlers once against given tasks, without an engine, and read what each
did: completed (with variables), replied (the reply message and its variables), deferred
(with the reply token it handed out), threw a BPMN error, or failed (the exception).

The handler is called as the worker calls it (sync ones on a thread, ``async`` ones
awaited; a reply topic's handler gets a reply token), and its result is checked as the
worker checks it (a mapping of variables the engine can take). What the worker does around
it (the lock, the journal, the completion, the correlation) is not run: test that against
the engine (the ``camunda_engine`` fixture).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from camunda_relay.errors import ConfigurationError
from camunda_relay.replies.tokens import new_token
from camunda_relay.router import CompleteVariables, Registration, Router
from camunda_relay.task import BpmnError, Complete, DeferReply, Task
from camunda_relay.variables import encode_all

__all__ = ["Outcome", "make_task", "run_handlers", "run_handlers_sync"]

Kind = Literal["completed", "replied", "deferred", "bpmn_error", "failed"]
_ids = itertools.count(1)


@dataclass(frozen=True)
class Outcome:
    """What one handler did with one task.

    ``kind``: ``completed`` (a plain topic's result, ``variables``, and ``local_variables``
    when it returned a :class:`~camunda_relay.Complete`), ``replied`` (a reply topic's
    result: ``message`` and ``variables``; ``complete_variables`` and
    ``complete_local_variables`` are what the task would be completed with), ``deferred``
    (``reply_token`` handed out), ``bpmn_error`` (``error`` is the
    :class:`~camunda_relay.BpmnError`; a reply topic cannot throw one, so there it is
    ``failed``), or ``failed`` (``error`` is the exception).
    """

    task: Task
    kind: Kind
    variables: Mapping[str, Any] = field(default_factory=dict)
    message: str | None = None
    complete_variables: Mapping[str, Any] = field(default_factory=dict)
    local_variables: Mapping[str, Any] = field(default_factory=dict)
    complete_local_variables: Mapping[str, Any] = field(default_factory=dict)
    reply_token: str | None = field(default=None, repr=False)
    error: BaseException | None = None

    @property
    def bpmn_error(self) -> BpmnError | None:
        return self.error if isinstance(self.error, BpmnError) else None


def make_task(topic: str, variables: Mapping[str, Any] | None = None, **fields: Any) -> Task:
    """A task of ``topic`` as the engine would hand it out, with fresh ids unless given."""
    number = next(_ids)
    values: dict[str, Any] = {
        "id": f"test-task-{number}",
        "worker_id": "test-worker",
        "process_instance_id": f"test-instance-{number}",
        "execution_id": f"test-execution-{number}",
        "business_key": f"test-{number}",
    }
    values.update(fields)
    return Task(topic=topic, variables=dict(variables or {}), **values)


async def run_handlers(router: Router, tasks: Iterable[Task]) -> list[Outcome]:
    """Run each task's handler once, in order; one :class:`Outcome` per task. A task whose
    topic the router does not serve is a :class:`~camunda_relay.ConfigurationError`."""
    outcomes = []
    for task in tasks:
        if task.topic not in router:
            raise ConfigurationError(f"the router has no handler for topic {task.topic!r}")
        outcomes.append(await _run(router[task.topic], task))
    return outcomes


def run_handlers_sync(router: Router, tasks: Iterable[Task]) -> list[Outcome]:
    """:func:`run_handlers` from code that has no event loop running (a plain test)."""
    return asyncio.run(run_handlers(router, list(tasks)))


async def _run(registration: Registration, task: Task) -> Outcome:
    reply = registration.reply
    if reply is not None:
        token, _ = new_token()
        task = Task(**{**_fields(task), "reply_token": token})
    try:
        if registration.is_async:
            result = await registration.handler(task)  # type: ignore[misc]
        else:
            result = await asyncio.to_thread(registration.handler, task)
        local: dict[str, Any] = {}
        if isinstance(result, Complete):
            if reply is not None:
                raise TypeError(
                    f"handler {registration.name} returned a Complete: a reply topic's task "
                    "is completed before its handler runs, so Complete is for plain topics only"
                )
            local = dict(result.local_variables)
            result = result.variables
        if result is not None and not isinstance(result, Mapping):
            raise TypeError(
                f"handler {registration.name} returned a {type(result).__name__}; "
                "expected a mapping of variables, a Complete or None"
            )
        variables = dict(result or {})
        encode_all(variables)
        encode_all(local)
    except DeferReply:
        if reply is None:
            return Outcome(task, "failed", error=TypeError("DeferReply needs a reply topic"))
        return Outcome(task, "deferred", message=reply.message, reply_token=task.reply_token)
    except BpmnError as error:
        return Outcome(task, "failed" if reply is not None else "bpmn_error", error=error)
    except Exception as error:  # noqa: BLE001 - a handler's error is an outcome
        return Outcome(task, "failed", error=error)
    if reply is None:
        return Outcome(task, "completed", variables=variables, local_variables=local)
    return Outcome(
        task,
        "replied",
        variables=variables,
        message=reply.message,
        complete_variables=_produced(reply.complete_variables, task),
        complete_local_variables=_produced(reply.complete_local_variables, task),
    )


def _produced(values: CompleteVariables | None, task: Task) -> dict[str, Any]:
    return dict(values(task) if callable(values) else values or {})


def _fields(task: Task) -> dict[str, Any]:
    names = task.__dataclass_fields__
    return {name: getattr(task, name) for name in names}
