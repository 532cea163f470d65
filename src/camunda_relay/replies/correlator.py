"""Delivering a reply: correlate the message to the instance that asked, exactly once.

Camunda 7 does not keep a message that arrives early: it answers 400 "No process definition
or execution matches". That answer means either *too early* (the instance has not reached
the catch event yet, e.g. behind an async continuation) or *already passed* (an earlier
correlation succeeded but its response was lost). :class:`Correlator` tells them apart from
history: a finished passage of a catch event for this message means delivered; otherwise it
retries with backoff until the job's deadline. Several matching executions is a modelling or
configuration error: reported at once, not retried. When delivery cannot succeed, the waiting
execution gets an incident (visible in Cockpit) instead of a silent forever-wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import timedelta

from camunda_relay.backoff import Backoff
from camunda_relay.client import EngineClient
from camunda_relay.errors import (
    AmbiguousCorrelation,
    AuthenticationFailed,
    BadRequest,
    EngineError,
    InvalidInput,
    NoMatchingExecution,
    NotFound,
)
from camunda_relay.replies.job import Job, JobState

__all__ = ["INCIDENT_TYPE", "Correlator", "catch_activity_ids"]

log = logging.getLogger(__name__)

INCIDENT_TYPE = "camundaRelay"
_BPMN = "{http://www.omg.org/spec/BPMN/20100524/MODEL}"
_MAX_INCIDENT_MESSAGE = 3900
# "Too early" clears within milliseconds to seconds (an async continuation); an unreachable
# engine takes longer, so its retries back off further.
EARLY_BACKOFF = Backoff(base=timedelta(milliseconds=50), cap=timedelta(seconds=5))
UNAVAILABLE_BACKOFF = Backoff(base=timedelta(milliseconds=500), cap=timedelta(seconds=30))


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
    """Sends reply messages and raises incidents for the ones that cannot be delivered."""

    def __init__(
        self,
        client: EngineClient,
        *,
        early: Backoff = EARLY_BACKOFF,
        unavailable: Backoff = UNAVAILABLE_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._early = early
        self._unavailable = unavailable
        self._sleep = sleep
        self._catch_ids: dict[tuple[str, str], frozenset[str]] = {}

    async def deliver(self, job: Job) -> Job:
        """Correlate ``job``'s message; return it delivered, or failed with an incident."""
        attempt = 0
        reason = "not tried yet"
        task = job.task
        extra = task.log_context()
        while True:
            if job.deadline is not None and time.time() > job.deadline:
                return await self.fail(
                    job,
                    f"reply message {job.message!r} not delivered before its deadline: {reason}",
                )
            try:
                await self._client.correlate(
                    job.message,
                    process_instance_id=task.process_instance_id,
                    business_key=task.business_key if job.by_business_key else None,
                    variables=job.result,
                )
            except NoMatchingExecution:
                passed = await self.passed(job)
                if passed:
                    log.info("reply already delivered (confirmed from history)", extra=extra)
                    return job.advance(JobState.DELIVERED, deliveries=job.deliveries + 1)
                try:
                    problem = None if passed is None else await self._why_nobody_waits(job)
                except EngineError as error:
                    problem = None
                    reason = f"history not readable ({type(error).__name__})"
                    delay = self._unavailable.delay(attempt)
                else:
                    if problem is not None and await self.passed(job):  # it just passed
                        return job.advance(JobState.DELIVERED, deliveries=job.deliveries + 1)
                    if problem is not None:
                        return await self.fail(job, problem)
                    if passed is None:
                        reason = "history not readable; cannot tell too early from delivered"
                        delay = self._unavailable.delay(attempt)
                    else:
                        reason = "too early: no execution waits for the message yet"
                        log.debug("reply too early, retrying", extra=extra)
                        delay = self._early.delay(attempt)
            except AmbiguousCorrelation as error:
                return await self.fail(
                    job,
                    f"reply message {job.message!r} matches several executions "
                    f"(a configuration error, not retried): {error.message}",
                )
            except InvalidInput as error:
                return await self.fail(job, f"reply message cannot be sent: {error}")
            except (AuthenticationFailed, EngineError) as error:
                if isinstance(error, BadRequest):
                    return await self.fail(
                        job, f"engine refused reply message {job.message!r}: {error.message}"
                    )
                if error.retryable and await self.passed(job):
                    return job.advance(JobState.DELIVERED, deliveries=job.deliveries + 1)
                reason = f"{type(error).__name__}: {error}"
                log.warning(
                    "reply delivery failed, retrying (%s)", type(error).__name__, extra=extra
                )
                delay = self._unavailable.delay(attempt)
            else:
                return job.advance(JobState.DELIVERED, deliveries=job.deliveries + 1)
            attempt += 1
            if job.deadline is not None:
                delay = max(0.0, min(delay, job.deadline - time.time()))
            await self._sleep(delay)

    async def passed(self, job: Job) -> bool | None:
        """True when the instance has already passed a catch event of the job's message;
        None when history cannot be read right now."""
        try:
            catch_ids = await self._catch_activities(job)
            passages = await self._client.historic_activity_instances(
                process_instance_id=job.task.process_instance_id
            )
        except EngineError:
            return None
        return any(
            passage.get("activityId") in catch_ids
            and passage.get("endTime") is not None
            and not passage.get("canceled", False)
            for passage in passages
        )

    async def _why_nobody_waits(self, job: Job) -> str | None:
        """A reason that retrying cannot help, or None when it may be just too early."""
        if not await self._catch_activities(job):
            return (
                f"the process has no catch event for message {job.message!r}: check the "
                "reply= name against the model"
            )
        instance = await self._client.historic_process_instance(job.task.process_instance_id)
        if instance is None or instance.get("endTime") is not None:
            return "the process instance ended before the reply could be delivered"
        return None

    async def _catch_activities(self, job: Job) -> frozenset[str]:
        definition = job.task.process_definition_id or ""
        key = (definition, job.message)
        if key not in self._catch_ids:
            xml = await self._client.process_definition_xml(definition)
            self._catch_ids[key] = catch_activity_ids(xml, job.message)
        return self._catch_ids[key]

    async def fail(self, job: Job, reason: str) -> Job:
        """Mark the job failed and raise an incident on the waiting execution, if any."""
        task = job.task
        extra = task.log_context()
        log.error("reply job failed: %s", reason, extra=extra)
        failed = job.advance(JobState.FAILING, error=reason).advance(JobState.FAILED)
        try:
            candidates = await self._incident_candidates(job)
        except EngineError as error:
            log.error("could not look up the execution (%s)", type(error).__name__, extra=extra)
            return failed
        if not candidates:
            log.error("no execution left to carry the incident", extra=extra)
            return failed
        for execution_id in candidates:
            try:
                await self._client.create_incident(
                    execution_id,
                    incident_type=INCIDENT_TYPE,
                    message=reason[:_MAX_INCIDENT_MESSAGE],
                    configuration=job.id,
                )
                return failed
            except BadRequest:
                continue  # e.g. a scope execution without an activity: try the next one
            except EngineError as error:
                log.error(
                    "could not create the incident (%s); the job stays failed in the journal",
                    type(error).__name__,
                    extra=extra,
                )
                return failed
        log.error("no execution accepted the incident; the job stays failed", extra=extra)
        return failed

    async def _incident_candidates(self, job: Job) -> list[str]:
        """Executions to carry the incident: the one waiting for the message, else those of
        the instance, newest first (the process instance itself has no activity once it has
        child executions, and the engine refuses an incident there)."""
        task = job.task
        try:
            waiting = await self._client.executions(
                process_instance_id=task.process_instance_id, message_name=job.message
            )
            if waiting:
                return [str(execution["id"]) for execution in waiting]
            executions = await self._client.executions(process_instance_id=task.process_instance_id)
        except NotFound:
            return []
        return [str(execution["id"]) for execution in reversed(executions)]
