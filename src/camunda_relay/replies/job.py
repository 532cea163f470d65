"""A reply job, its states, and the one table of the moves between them.

::

    recorded ──complete──▶ acknowledged ──work──▶ done ──correlate──▶ delivered
        │                        │    │             ▲  │
        │                        │    └─ defer ─▶ deferred ── answered with a result
        │                        │                  │
        └─ not completed:        └─ fails for good  └─ answered with a failure, or the
           dropped                     │               deadline passed; done: cannot be
                                       │               delivered
                                       └────▶ failing ◀───┘
                                                 │ incident created (or nobody left to carry it)
                                                 ▼
                                               failed

    acknowledged, deferred, done ── the instance no longer waits for the reply ──▶ cancelled

A job is written to the journal (keyed by the external task id) *before* its task is
completed. Every change of state goes through :meth:`Job.advance`, which consults
:data:`TRANSITIONS` and raises :class:`~camunda_relay.errors.IllegalTransition` for a move
the table does not allow. The state sets that other modules (the journals' SQL, the
reconciler, ``camunda-relay pending``) need are defined here and nowhere else.

``deferred``: the handler ended its part and handed out the attempt's reply token
(:mod:`camunda_relay.replies.tokens`); the job waits, held by nobody, until the token's
holder answers (``answer``, written by :meth:`~camunda_relay.journal.base.Journal.answer`
only) or its ``deadline`` passes; a worker serving its topic then claims it.

``failing``: the job has failed for good and its incident is not in the engine yet (the
engine was unreachable): it is retried until it lands, and the job is not finished until
then. The moves back (``delivered → done``, ``failed``/``dropped → recorded``) are the
engine offering a task again after it lost the completion, and ``camunda-relay pending
retry``.

``cancelled``: the instance no longer waits for the reply and never will (cancelled or
deleted in Cockpit or over the REST API, ended, or moved past the catch event): the work was
cancelled (:mod:`camunda_relay.worker.cancellation`), or the delivery found the instance
ended. Nobody waits, so no message is sent and no incident raised. A task offered again
(the engine lost the completion and the instance with it, then got both back) starts afresh.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from camunda_relay.errors import IllegalTransition
from camunda_relay.task import Task

__all__ = [
    "ANSWERED",
    "COMPLETED_BEFORE",
    "FINISHED",
    "TRANSITIONS",
    "UNFINISHED",
    "Answer",
    "Job",
    "JobState",
    "sql_states",
]


class JobState(StrEnum):
    """Where a reply job stands; its value is what the journal stores and ``pending`` shows.

    ``recorded`` (written, its task not completed yet), ``acknowledged`` (the task is
    completed, the work runs), ``deferred`` (the work handed out a reply token and waits for
    its answer), ``done`` (the work is done, the message not delivered yet),
    ``failing`` (failed for good, the incident not in the engine yet), and the finished
    states ``delivered``, ``failed`` (an incident carries it), ``dropped`` (the task was
    never completed) and ``cancelled`` (the instance no longer waits for the reply).
    """

    RECORDED = "recorded"
    ACKNOWLEDGED = "acknowledged"
    DEFERRED = "deferred"
    DONE = "done"
    FAILING = "failing"
    DELIVERED = "delivered"
    FAILED = "failed"
    DROPPED = "dropped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


_S = JobState

TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    # completed (acknowledged), not completed (dropped), or saved again as it is
    _S.RECORDED: frozenset({_S.RECORDED, _S.ACKNOWLEDGED, _S.DROPPED}),
    # the next attempt, the work's end, the work deferred, failed for good, or cancelled
    _S.ACKNOWLEDGED: frozenset({_S.ACKNOWLEDGED, _S.DONE, _S.DEFERRED, _S.FAILING, _S.CANCELLED}),
    # answered (done), answered with a failure or past the deadline, cancelled; pending retry
    _S.DEFERRED: frozenset({_S.DEFERRED, _S.DONE, _S.FAILING, _S.ACKNOWLEDGED, _S.CANCELLED}),
    # delivered, cannot be delivered, saved again (a deadline moved), the instance ended;
    # pending retry
    _S.DONE: frozenset({_S.DONE, _S.DELIVERED, _S.FAILING, _S.ACKNOWLEDGED, _S.CANCELLED}),
    # the incident landed (or nobody is left to carry it); pending retry
    _S.FAILING: frozenset({_S.FAILING, _S.FAILED, _S.DONE, _S.ACKNOWLEDGED}),
    # the engine lost the completion and the message with it: deliver again
    _S.DELIVERED: frozenset({_S.DONE}),
    # the task is offered again (the engine lost the completion); pending retry
    _S.FAILED: frozenset({_S.RECORDED, _S.DONE, _S.ACKNOWLEDGED}),
    # the task is offered again; pending retry
    _S.DROPPED: frozenset({_S.RECORDED}),
    # the task is offered again (the engine lost the completion and got the instance back)
    _S.CANCELLED: frozenset({_S.RECORDED}),
}

FINISHED = frozenset({_S.DELIVERED, _S.FAILED, _S.DROPPED, _S.CANCELLED})
"""States no worker acts on any more: the journal keeps them for listings only.

The journals' partial indexes list :data:`UNFINISHED` states only, so a new finished state
leaves their definitions (and the schema versions) as they were."""

UNFINISHED = frozenset(JobState) - FINISHED
"""States a worker must carry on from (after a restart, or taking over a dead peer's job)."""

COMPLETED_BEFORE = frozenset({_S.ACKNOWLEDGED, _S.DEFERRED, _S.DONE, _S.FAILING, _S.DELIVERED})
"""States of a job whose task a worker completed: a task offered again in one of them was
lost by the engine, and is completed again without re-running the work."""

ANSWERED = frozenset({_S.DELIVERED, _S.FAILED})
"""States in which the instance has had its answer: the message, or an incident."""


@dataclass(frozen=True)
class Answer:
    """What the holder of a reply token sent: the reply's variables, or a failure (its
    ``reason`` becomes the incident's message); ``trace``: the answerer's W3C trace context
    (``traceparent``, ``tracestate``), kept while tracing is on."""

    variables: Mapping[str, Any] | None = field(default=None, repr=False)
    failure: str | None = field(default=None, repr=False)
    trace: Mapping[str, str] | None = field(default=None, repr=False, compare=False)


def sql_states(states: frozenset[JobState]) -> str:
    """``states`` as an SQL list literal, ``'a', 'b'``, for the journals' statements."""
    return ", ".join(f"'{state.value}'" for state in sorted(states))


@dataclass(frozen=True)
class Job:
    """One reply job. ``result`` holds the variables to send; ``error`` never holds values
    (what failed: the step, the exception's type, the ids); ``error_detail`` is the text of
    a handler's exception, which may quote a value: kept for the engine's incident and for
    ``camunda-relay pending --show-errors``, never logged unless asked
    (``CAMUNDA_LOG_ERROR_DETAILS``).

    ``deadline`` (epoch seconds) bounds how long the instance may *not* be waiting for the
    message once the work is done; it is moved on while the engine cannot answer. For a
    ``deferred`` job it bounds the wait for the token's answer.

    ``token_hash`` is the SHA-256 of the current attempt's reply token (the token itself is
    never stored; ``reply_token`` holds it in memory for the attempt's handler only).
    ``answer`` is what the token's holder sent, read from the journal, never written by
    :meth:`~camunda_relay.journal.base.Journal.save`.

    ``filter_key`` names the fetch filters of the registration that took the job
    (:func:`camunda_relay.filters.filter_key`; ``""``: none): only a worker whose
    registration of the topic has the same key takes it over (docs/journal.md).
    """

    task: Task
    message: str
    by_business_key: bool = False
    state: JobState = JobState.RECORDED
    attempts: int = 0
    deliveries: int = 0
    result: Mapping[str, Any] | None = field(default=None, repr=False)
    error: str | None = None
    error_detail: str | None = field(default=None, repr=False)
    deadline: float | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    token_hash: str | None = None
    answer: Answer | None = field(default=None, compare=False)
    reply_token: str | None = field(default=None, repr=False, compare=False)
    filter_key: str = ""

    @property
    def id(self) -> str:
        return self.task.job_id

    def advance(self, state: JobState, *, at: float | None = None, **changes: Any) -> Job:
        """A copy in ``state`` with ``changes`` applied and ``updated_at`` set to ``at`` (now
        when None). :class:`~camunda_relay.errors.IllegalTransition` when the table does
        not allow the move."""
        if state not in TRANSITIONS[self.state]:
            raise IllegalTransition(
                f"reply job {self.id}: {self.state.value} cannot move to {state.value}"
            )
        updated = time.time() if at is None else at
        return dataclasses.replace(self, state=state, updated_at=updated, **changes)
