"""What a handler sees: a frozen :class:`Task` record and the outcomes it can choose.

A handler is a plain function (sync or async) taking a :class:`Task` and returning a mapping
of variables (or None). Other outcomes are typed exceptions:

- :class:`BpmnError` throws a BPMN error, caught by an error boundary event in the model;
- :class:`RetryLater` (or any other exception) goes through the retry policy: a failure with
  decreasing retries, an incident when none are left;
- :class:`DeferReply` (reply topics only) ends the handler's part without a result: whoever
  holds ``task.reply_token`` answers later (:mod:`camunda_relay.replies.tokens`).

For a reply topic the return value is the reply message's variables.

When the task's instance no longer waits for the work (cancelled, deleted or moved on), the
worker cancels it: an ``async`` handler gets :class:`asyncio.CancelledError` where it awaits,
and has ``CAMUNDA_CANCEL_GRACE`` to clean up; a plain function's ``task.cancelled`` (a
:class:`Cancellation`) is set, and the worker stops waiting for it after the same grace.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

__all__ = ["BpmnError", "Cancellation", "Complete", "DeferReply", "RetryLater", "Task"]


class Cancellation:
    """Whether the worker cancelled a task's work (its instance no longer waits for it): an
    event a handler can check (:meth:`is_set`) or wait on (:meth:`wait`, from any thread).

    The read side only: the worker holds the one that sets it. A plain function handler
    checks it between steps (``if task.cancelled.is_set(): return``) or waits on it in place
    of a sleep; an ``async`` handler is cancelled by :class:`asyncio.CancelledError` instead
    and seldom needs it. ``reason`` says why, once set (ids and states, never a value).
    """

    __slots__ = ("_event", "_reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason: str | None = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` seconds passed; whether it was cancelled."""
        return self._event.wait(timeout)

    @property
    def reason(self) -> str | None:
        return self._reason

    def set(self, reason: str) -> None:
        """For the worker (and tests of a handler): cancel with ``reason``; once."""
        if not self._event.is_set():
            self._reason = reason
            self._event.set()

    def __repr__(self) -> str:
        return f"Cancellation({'set: ' + repr(self._reason) if self.is_set() else 'not set'})"


@dataclass(frozen=True)
class Task:
    """One locked external task, as fetched. Variables are read-only Python values."""

    id: str
    topic: str
    worker_id: str
    process_instance_id: str
    execution_id: str | None = None
    activity_id: str | None = None
    activity_instance_id: str | None = None
    process_definition_id: str | None = None
    process_definition_key: str | None = None
    business_key: str | None = None
    tenant_id: str | None = None
    retries: int | None = None
    priority: int = 0
    lock_expiration: datetime | None = None
    variables: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # The activity's extension properties (``camunda:property`` in the model), fetched only
    # for a topic registered with ``extension_properties=True``.
    extension_properties: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Stable across re-runs of the same job (after a crash): the handler's idempotency key.
    job_id: str = ""
    # A reply topic's handler only: the token that answers this attempt's reply later, once
    # the handler raises DeferReply. Random, usable once, never stored (only its hash).
    reply_token: str | None = field(default=None, repr=False, compare=False)
    # Set by the worker when the task's instance no longer waits for this work: a capability
    # of the running attempt, like the reply token, not part of the record (each attempt gets
    # a fresh one; never compared, never stored).
    cancelled: Cancellation = field(default_factory=Cancellation, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.variables, MappingProxyType):
            object.__setattr__(self, "variables", MappingProxyType(dict(self.variables)))
        if not isinstance(self.extension_properties, MappingProxyType):
            properties = MappingProxyType(dict(self.extension_properties))
            object.__setattr__(self, "extension_properties", properties)
        if not self.job_id:
            object.__setattr__(self, "job_id", self.id)

    def log_context(self) -> dict[str, object]:
        """Identifiers for log records (``extra=``); never variable values."""
        return {
            "task_id": self.id,
            "topic": self.topic,
            "process_instance_id": self.process_instance_id,
            "job_id": self.job_id,
        }


@dataclass(frozen=True)
class Complete:
    """What a plain topic's handler may return instead of a mapping: complete the task with
    process ``variables`` and ``local_variables`` set in the task's own scope (the Java and
    JS clients' ``complete(task, variables, localVariables)``)."""

    variables: Mapping[str, object] = field(default_factory=dict)
    local_variables: Mapping[str, object] = field(default_factory=dict)


class BpmnError(Exception):
    """Throw a BPMN error with this code (an error boundary event in the model catches it)."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        variables: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message
        self.variables = dict(variables or {})


class RetryLater(Exception):
    """Report a failure now and let the engine offer the task again after ``after``.

    ``retries`` overrides the number of retries left (0 creates an incident at once);
    ``details`` replaces the traceback as the failure's error details.
    """

    def __init__(
        self,
        message: str,
        *,
        after: timedelta | None = None,
        retries: int | None = None,
        details: str | None = None,
    ) -> None:
        super().__init__(message)
        self.after = after
        self.retries = retries
        self.details = details


class DeferReply(Exception):
    """End a reply topic's handler without a result: the reply is sent once the holder of
    ``task.reply_token`` answers (:func:`~camunda_relay.replies.tokens.send_reply`, ``camunda-relay
    reply``, or the worker's HTTP endpoint), or an incident is raised when the reply deadline
    passes first."""

    def __init__(self, message: str = "the reply is deferred to the token's holder") -> None:
        super().__init__(message)
