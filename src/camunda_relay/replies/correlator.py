"""Delivering a reply: correlate the message to the instance that asked, exactly once.

Camunda 7 does not keep a message that arrives early: it answers 400 "No process definition
or execution matches". That answer means either *too early* (the instance has not reached
the catch event yet, e.g. behind an async continuation) or *already passed* (an earlier
correlation succeeded but its response was lost). :class:`Correlator` tells them apart from
history: a finished passage of a catch event for this message *in this job's round* (it
started after the job's task ended: a model may loop back to the catch event) means
delivered; otherwise it retries with backoff.

The job's deadline bounds the time the instance is seen *not waiting* for the message: it
is checked only on a "too early" answer, never before the first try, and it is moved on by
every stretch in which the engine could not answer (unreachable, 5xx, history unreadable).
An engine outage of any length therefore never fails a reply. Several matching executions is
a modelling or configuration error: failed at once, not retried. A job that cannot be
delivered comes back ``failing``; its incident is raised by the caller
(:mod:`camunda_relay.replies.incidents`). A job whose instance history shows ended (cancelled
or deleted, ``EXTERNALLY_TERMINATED``, or ended some other way before the catch event's
passage in the job's round) comes back ``cancelled``: nobody waits, and no execution is left
to carry an incident.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from camunda_relay.backoff import Backoff
from camunda_relay.client import EngineClient
from camunda_relay.clock import SYSTEM, Clock
from camunda_relay.errors import (
    AmbiguousCorrelation,
    AuthenticationFailed,
    BadRequest,
    EngineError,
    InvalidInput,
    NoMatchingExecution,
)
from camunda_relay.replies.incidents import INCIDENT_TYPE
from camunda_relay.replies.job import Job, JobState
from camunda_relay.variables import engine_date

__all__ = [
    "CANCELLED",
    "ENDED",
    "INCIDENT_TYPE",
    "Correlator",
    "Wait",
    "catch_activity_ids",
    "round_start",
]

log = logging.getLogger(__name__)

_BPMN = "{http://www.omg.org/spec/BPMN/20100524/MODEL}"
# "Too early" clears within milliseconds to seconds (an async continuation); an unreachable
# engine takes longer, so its retries back off further.
EARLY_BACKOFF = Backoff(base=timedelta(milliseconds=50), cap=timedelta(seconds=5))
UNAVAILABLE_BACKOFF = Backoff(base=timedelta(milliseconds=500), cap=timedelta(seconds=30))

Wait = Callable[[float], Awaitable[bool]]
"""Wait so many seconds; False when the worker stops meanwhile (the caller then returns)."""


def catch_activity_ids(bpmn_xml: str, message_name: str) -> frozenset[str]:
    """Ids of the elements that wait for ``message_name``: catch events, boundary events and
    receive tasks."""
    root = ET.fromstring(bpmn_xml)  # noqa: S314 - trusted source (the engine)
    message_ids = {
        element.get("id")
        for element in root.iter(f"{_BPMN}message")
        if element.get("name") == message_name
    }
    found: set[str] = set()
    for element in root.iter():
        activity_id = element.get("id")
        if activity_id is None:
            continue
        if element.tag == f"{_BPMN}receiveTask" and element.get("messageRef") in message_ids:
            found.add(activity_id)
            continue
        for definition in element.findall(f"{_BPMN}messageEventDefinition"):
            if definition.get("messageRef") in message_ids:
                found.add(activity_id)
    return frozenset(found)


class Correlator:
    """Sends reply messages; tells "too early" from "already delivered" from history."""

    def __init__(
        self,
        client: EngineClient,
        *,
        clock: Clock = SYSTEM,
        early: Backoff = EARLY_BACKOFF,
        unavailable: Backoff = UNAVAILABLE_BACKOFF,
    ) -> None:
        self._client = client
        self._clock = clock
        self._early = early
        self._unavailable = unavailable
        self._catch_ids: dict[tuple[str, str], frozenset[str]] = {}

    async def deliver(self, job: Job, *, wait: Wait) -> Job:
        """Correlate ``job``'s message. Returns it ``delivered``, or ``failing`` with the
        reason (its incident is still to be raised), or, when ``wait`` says the worker stops,
        still ``done`` (its deadline moved on by the time the engine could not answer)."""
        attempt = 0
        silent_since: float | None = None  # wall time since which the engine has not answered
        extra = job.task.log_context()
        while True:
            outcome = await self._try(job)
            if isinstance(outcome, Job):
                return outcome
            now = self._clock.wall()
            if outcome == _EARLY:
                if silent_since is not None and job.deadline is not None:
                    job = _moved(job, now - silent_since)
                silent_since = None
                if job.deadline is not None and now >= job.deadline:
                    return job.advance(
                        JobState.FAILING,
                        error=f"reply message {job.message!r} not delivered before its "
                        f"deadline: {_EARLY}",
                    )
                log.debug("reply too early, retrying", extra=extra)
                delay = self._early.delay(attempt)
                if job.deadline is not None:
                    delay = max(0.0, min(delay, job.deadline - now))
            else:
                if silent_since is None:
                    silent_since = now
                log.warning("reply delivery not answered, retrying (%s)", outcome, extra=extra)
                delay = self._unavailable.delay(attempt)
            attempt += 1
            if not await wait(delay):
                if silent_since is not None and job.deadline is not None:
                    job = _moved(job, self._clock.wall() - silent_since)
                return job

    async def _try(self, job: Job) -> Job | str:
        """One correlation: the job delivered or failing, :data:`_EARLY`, or a description
        of why the engine gave no answer that counts (retry without running the deadline)."""
        task = job.task
        try:
            await self._client.correlate(
                job.message,
                process_instance_id=task.process_instance_id,
                business_key=task.business_key if job.by_business_key else None,
                variables=job.result,
            )
        except NoMatchingExecution:
            return await self._no_match(job)
        except AmbiguousCorrelation as error:
            return _failing(
                job,
                f"reply message {job.message!r} matches several executions "
                f"(a configuration error, not retried): {error.message}",
            )
        except InvalidInput as error:
            return _failing(job, f"reply message cannot be sent: {error}")
        except BadRequest as error:
            return _failing(job, f"engine refused reply message {job.message!r}: {error.message}")
        except (AuthenticationFailed, EngineError) as error:
            # Unreachable, 5xx, a 401 while a password is rotated: the answer may have been
            # lost after the engine committed, so history decides before the next try.
            if error.retryable and await self.passed(job):
                return _delivered(job)
            return f"{type(error).__name__}: {error}"
        return _delivered(job)

    async def _no_match(self, job: Job) -> Job | str:
        passed = await self.passed(job)
        if passed:
            log.info(
                "reply already delivered (confirmed from history)", extra=job.task.log_context()
            )
            return _delivered(job)
        if passed is None:
            return "history not readable; cannot tell too early from delivered"
        try:
            problem = await self._why_nobody_waits(job)
        except EngineError as error:
            return f"history not readable ({type(error).__name__})"
        if problem is None:
            return _EARLY
        if await self.passed(job):  # it passed just now
            return _delivered(job)
        if problem in (CANCELLED, ENDED):
            # Nobody waits, and nobody will: no execution could carry an incident either.
            return job.advance(JobState.CANCELLED, error=problem)
        return _failing(job, problem)

    async def passed(self, job: Job) -> bool | None:
        """True when the instance has passed a catch event of the job's message in the job's
        round (a passage that started after the job's task ended); None when history cannot
        be read right now."""
        try:
            catch_ids = await self.catch_activities(job)
            passages = await self._client.historic_activity_instances(
                process_instance_id=job.task.process_instance_id
            )
        except EngineError:
            return None
        since = round_start(passages, job.task.activity_instance_id)
        for passage in passages:
            if passage.get("activityId") not in catch_ids or passage.get("canceled", False):
                continue
            if passage.get("endTime") is None:
                continue
            started = engine_date(passage.get("startTime"))
            if since is None or (started is not None and started >= since):
                return True
        return False

    async def _why_nobody_waits(self, job: Job) -> str | None:
        """A reason that retrying cannot help, or None when it may be just too early."""
        if not await self.catch_activities(job):
            return (
                f"the process has no catch event for message {job.message!r}: check the "
                "reply= name against the model"
            )
        instance = await self._client.historic_process_instance(job.task.process_instance_id)
        if instance is None:  # no history of it (removed, or an engine that keeps none)
            return "the process instance ended before the reply could be delivered"
        if instance.get("endTime") is not None:
            return CANCELLED if instance.get("state") == "EXTERNALLY_TERMINATED" else ENDED
        return None

    async def catch_activities(self, job: Job) -> frozenset[str]:
        """The ids of the elements of the job's process that wait for its message (read
        once per process definition and message)."""
        definition = job.task.process_definition_id or ""
        key = (definition, job.message)
        if key not in self._catch_ids:
            xml = await self._client.process_definition_xml(definition)
            self._catch_ids[key] = catch_activity_ids(xml, job.message)
        return self._catch_ids[key]


_EARLY = "too early: no execution waits for the message yet"
CANCELLED = "the process instance was cancelled"
ENDED = "the process instance ended without waiting for the reply"


def _delivered(job: Job) -> Job:
    return job.advance(JobState.DELIVERED, deliveries=job.deliveries + 1)


def _failing(job: Job, reason: str) -> Job:
    return job.advance(JobState.FAILING, error=reason)


def _moved(job: Job, seconds: float) -> Job:
    """``job`` with its deadline moved on by ``seconds`` (a stretch the engine was silent)."""
    assert job.deadline is not None
    return job.advance(job.state, deadline=job.deadline + max(seconds, 0.0), at=job.updated_at)


def round_start(
    passages: Sequence[Mapping[str, Any]], activity_instance_id: str | None
) -> datetime | None:
    """When the job's round began: the end of the task's own activity instance (its start
    while history has no end yet); None when the task's instance is unknown (every passage
    then counts, as in a model without loops)."""
    if activity_instance_id is None:
        return None
    for passage in passages:
        if passage.get("id") == activity_instance_id:
            return engine_date(passage.get("endTime")) or engine_date(passage.get("startTime"))
    return None
