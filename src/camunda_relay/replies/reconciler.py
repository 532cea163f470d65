"""Finding replies nobody will send: executions waiting for a relay message no journal knows.

A reply job lives in the worker's journal from before its task is completed until its
message is delivered. If the journal is lost (a volume gone, a file deleted) or a job is
deleted by hand (``camunda-relay pending cancel``), the process instance waits at its catch
event forever and nothing says so. :func:`find_orphans` finds those executions;
:class:`Reconciler` runs it periodically and makes each orphan visible: an ERROR log line and
a metric always; then, as configured, nothing more (``report``), an incident of type
:data:`~camunda_relay.replies.incidents.INCIDENT_TYPE` on the waiting execution, shown in Cockpit
(``incident``), or the work started again (``resume``).

Resuming rebuilds the lost job from the engine: the completed external task of a reply topic
for that message (its id stays the job id, the handler's idempotency key) from the external
task log, and the instance's variables as they are now (the ones the task saw, plus any set
since, such as the task's completion variables). The work then runs again, at least once
more, and the message is delivered once. An orphan that cannot be rebuilt (no such task in
the history) gets the incident instead. Either way a person can also re-run the work by hand
and correlate the message (``camunda-relay correlate``), or cancel the instance.

How an execution is judged, for each message name given:

1. every message event subscription of that name that belongs to an execution
   (``GET /event-subscription``, paged), i.e. every execution waiting for the message;
2. minus instances with an unfinished job in the journal (read *after* the subscriptions:
   a job is recorded before its task is completed, so a job whose subscription was seen is
   in the journal by then, unfinished, or finished in the meantime: see 5);
3. minus subscriptions younger than ``min_age`` (their ``createdDate``, the engine's
   clock): a margin for clock skew and for jobs being worked on right now;
4. minus instances that already carry an incident of type ``camundaRelay`` (a failed job's,
   or an orphan's from an earlier sweep): no duplicate incidents;
5. minus instances whose latest completed external task (``GET /history/external-task-log``,
   needs history level ``full``, the bundled engine's) has a delivered or failed job in the
   journal (a *dropped* job means this worker never completed the task: still an orphan; an
   older round's delivered job, in a model that loops, does not count).

Only run it where the journal holds every job for these messages: one worker pod with its
SQLite file, or all pods sharing one PostgreSQL journal. Pods with separate journals would
report each other's jobs as orphans. A worker sweeps under the journal's sweep lock
(:mod:`camunda_relay.journal.sweep_lock`), so of the workers sharing a journal one sweeps at
a time; two sweepers run without it could, rarely, both create an incident for the same new
orphan (the check and the creation are two calls).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

from camunda_relay.client import EngineClient
from camunda_relay.errors import BadRequest, EngineError, NotFound
from camunda_relay.journal.base import Journal
from camunda_relay.replies.incidents import INCIDENT_TYPE, Incidents
from camunda_relay.replies.job import ANSWERED
from camunda_relay.variables import engine_date

__all__ = ["DEFAULT_MIN_AGE", "Action", "Orphan", "Reconciler", "find_orphans"]

log = logging.getLogger(__name__)

Action = Literal["report", "incident", "resume"]
ACTIONS: tuple[Action, ...] = ("report", "incident", "resume")
DEFAULT_MIN_AGE = timedelta(minutes=5)
# The engine sorts every matching subscription for each page it serves (offset paging), so a
# sweep's engine work grows with (waiting executions)² / page size: with 10,000 waiting, one
# sweep cost the bundled H2 engine 6.7 and 11.4 s of CPU at 500 per page and 0.8 and 1.4 s at 5,000.
PAGE_SIZE = 5000
# An engine's queryMaxResultsLimit refuses a larger page: "Max results limit of N exceeded".
_RESULTS_LIMIT = re.compile(r"max results limit of (\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Orphan:
    """An execution waiting for a reply message that no journal knows of."""

    process_instance_id: str
    execution_id: str
    business_key: str | None
    message: str
    activity_id: str | None
    waiting_since: datetime | None  # the subscription's createdDate, when the engine gave it

    def log_context(self) -> dict[str, object]:
        """Identifiers for log records (``extra=``); no business key, no values."""
        return {"process_instance_id": self.process_instance_id}


async def find_orphans(
    client: EngineClient,
    journal: Journal,
    messages: Collection[str],
    *,
    min_age: timedelta,
    now: datetime | None = None,
) -> list[Orphan]:
    """Executions waiting for one of ``messages`` that no journal job will answer.

    See the module docstring for the rules. Oldest first. Raises
    :class:`~camunda_relay.errors.EngineError` when the engine cannot be asked.
    """
    if min_age < timedelta(0):
        raise ValueError(f"min_age must not be negative, not {min_age}")
    waiting: list[_Waiting] = []
    for message in sorted(set(messages)):
        waiting.extend(await _waiting_for(client, message))
    if not waiting:
        return []
    pending = await journal.unfinished_instances()
    cutoff = (now or datetime.now(UTC)) - min_age
    candidates = [
        entry
        for entry in waiting
        if entry.process_instance_id not in pending
        and (entry.created is None or entry.created <= cutoff)
    ]
    if not candidates:
        return []
    flagged = {
        str(incident.get("processInstanceId"))
        for incident in await client.incidents(incident_type=INCIDENT_TYPE)
    }
    candidates = [entry for entry in candidates if entry.process_instance_id not in flagged]
    answered: dict[str, bool] = {}
    orphans: list[_Waiting] = []
    for entry in candidates:
        instance = entry.process_instance_id
        if instance not in answered:
            answered[instance] = await _journal_answered(client, journal, instance)
        if not answered[instance]:
            orphans.append(entry)
    keys = await _business_keys(client, {entry.process_instance_id for entry in orphans})
    found = [
        Orphan(
            process_instance_id=entry.process_instance_id,
            execution_id=entry.execution_id,
            business_key=keys.get(entry.process_instance_id),
            message=entry.message,
            activity_id=entry.activity_id,
            waiting_since=entry.created,
        )
        for entry in orphans
    ]
    return sorted(found, key=_oldest_first)


def _oldest_first(orphan: Orphan) -> tuple[bool, datetime, str, str]:
    since = orphan.waiting_since or datetime.min.replace(tzinfo=UTC)
    return (orphan.waiting_since is None, since, orphan.process_instance_id, orphan.message)


@dataclass(frozen=True)
class _Waiting:
    process_instance_id: str
    execution_id: str
    message: str
    activity_id: str | None
    created: datetime | None


async def _waiting_for(client: EngineClient, message: str) -> list[_Waiting]:
    """Executions subscribed to ``message`` now (message start events have no execution)."""
    found: list[_Waiting] = []
    first, size = 0, PAGE_SIZE
    while True:
        try:
            page = await _event_subscriptions(client, message, first=first, size=size)
        except BadRequest as error:
            limit = _RESULTS_LIMIT.search(error.message)
            if limit is None or not 0 < int(limit.group(1)) < size:
                raise
            size = int(limit.group(1))  # the engine's cap: smaller pages from here on
            continue
        for subscription in page:
            execution = subscription.get("executionId")
            instance = subscription.get("processInstanceId")
            if not execution or not instance:
                continue
            found.append(
                _Waiting(
                    process_instance_id=str(instance),
                    execution_id=str(execution),
                    message=message,
                    activity_id=subscription.get("activityId"),
                    created=engine_date(subscription.get("createdDate")),
                )
            )
        if len(page) < size:
            return found
        # Offsets shift when subscriptions go away between pages; one skipped now is seen
        # by the next sweep.
        first += size


async def _journal_answered(client: EngineClient, journal: Journal, instance: str) -> bool:
    """Whether the journal job of the instance's latest completed task is delivered/failed.

    Only the latest: in a model that loops back to the catch event, an earlier round's
    delivered job says nothing about the reply owed now.
    """
    completed = await _completed_task_ids(client, instance)
    if not completed:
        return False
    job = await journal.get(completed[-1])
    return job is not None and job.state in ANSWERED


async def _business_keys(client: EngineClient, instances: set[str]) -> dict[str, str | None]:
    if not instances:
        return {}
    found = await client.historic_process_instances(process_instance_ids=sorted(instances))
    return {str(instance["id"]): instance.get("businessKey") for instance in found}


async def _event_subscriptions(
    client: EngineClient, message: str, *, first: int, size: int
) -> list[dict[str, Any]]:
    return await client.message_subscriptions(message, first=first, max_results=size)


async def _completed_task_ids(client: EngineClient, instance: str) -> list[str]:
    try:
        entries = await client.external_task_log(process_instance_id=instance, success_only=True)
    except NotFound:
        return []
    return [str(entry["externalTaskId"]) for entry in entries if entry.get("externalTaskId")]


# -- the periodic sweep ------------------------------------------------------------------------


class Reconciler:
    """Finds orphans periodically and makes them visible (a log line and metrics), then acts.

    ``messages``: the reply message names to watch (a worker passes its router's). ``action``:
    ``"report"`` logs one ERROR line per new orphan (ids only) and counts it; ``"incident"``
    also raises an incident of type ``camundaRelay`` on the waiting execution, which takes it
    out of later sweeps; ``"resume"`` hands the orphan to ``resume`` (the worker's: it rebuilds
    the job, records it and runs it; True when it did, False when the orphan cannot be
    rebuilt, which then gets the incident). Metrics go to ``registry`` (a private one when
    None: never the process-wide default, so two reconcilers or tests do not collide).
    """

    def __init__(
        self,
        client: EngineClient,
        journal: Journal,
        messages: Iterable[str],
        *,
        action: Action = "report",
        min_age: timedelta = DEFAULT_MIN_AGE,
        registry: CollectorRegistry | None = None,
        resume: Callable[[Orphan], Awaitable[bool]] | None = None,
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        if action == "resume" and resume is None:
            raise ValueError("the resume action needs a worker to resume orphans with")
        self.resume = resume
        if min_age < timedelta(0):
            raise ValueError(f"min_age must not be negative, not {min_age}")
        self.client = client
        self.journal = journal
        self.messages = frozenset(messages)
        self.action: Action = action
        self.min_age = min_age
        self.registry = registry if registry is not None else CollectorRegistry()
        self._seen: set[tuple[str, str, str]] = set()
        self.orphans = Gauge(
            "camunda_relay_orphans",
            "Executions waiting for a reply message no journal knows, at the last sweep "
            "(those already carrying a camundaRelay incident are not counted)",
            registry=self.registry,
        )
        self.orphans_found = Counter(
            "camunda_relay_orphans_found",
            "Orphaned executions found (each counted once per reconciler)",
            registry=self.registry,
        )
        self.incidents_created = Counter(
            "camunda_relay_orphan_incidents",
            "Incidents raised on orphaned executions",
            registry=self.registry,
        )
        self.orphans_resumed = Counter(
            "camunda_relay_orphans_resumed",
            "Orphaned executions whose job was rebuilt from the engine and started again",
            registry=self.registry,
        )
        self.sweep_errors = Counter(
            "camunda_relay_reconcile_errors",
            "Sweeps that could not finish (engine or journal not available)",
            registry=self.registry,
        )
        self.last_sweep = Gauge(
            "camunda_relay_reconcile_last_success_timestamp_seconds",
            "When the last sweep finished (Unix time)",
            registry=self.registry,
        )

    async def sweep(self) -> list[Orphan]:
        """One pass: find orphans, report each new one, act on them; return those found.

        An unreachable engine is logged and counted, not raised (the next sweep tries
        again); an empty list comes back then.
        """
        if not self.messages:
            return []
        try:
            found = await find_orphans(
                self.client, self.journal, self.messages, min_age=self.min_age
            )
        except EngineError as error:
            self.sweep_errors.inc()
            log.warning("reconciliation sweep failed (%s); trying again later", error)
            return []
        self.orphans.set(len(found))
        current = {_key(orphan) for orphan in found}
        for orphan in found:
            if _key(orphan) not in self._seen:
                self.orphans_found.inc()
                log.error(
                    "execution %s of process instance %s waits for reply message %r, and no "
                    "worker journal knows it: nothing will send it",
                    orphan.execution_id,
                    orphan.process_instance_id,
                    orphan.message,
                    extra=orphan.log_context(),
                )
            if self.action == "resume" and await self._resume(orphan):
                continue
            if self.action in ("incident", "resume"):
                await self._raise_incident(orphan)
        self._seen = current
        self.last_sweep.set_to_current_time()
        return found

    async def _resume(self, orphan: Orphan) -> bool:
        """True when resumed, or when it cannot be told now (the next sweep tries again)."""
        assert self.resume is not None
        try:
            resumed = await self.resume(orphan)
        except EngineError as error:
            _next_sweep("resume the orphan", orphan, error)
            return True
        if resumed:
            self.orphans_resumed.inc()
        return resumed

    async def _raise_incident(self, orphan: Orphan) -> None:
        try:
            await Incidents(self.client).on_execution(
                orphan.execution_id, incident_message(orphan), f"orphan:{orphan.message}"
            )
        except EngineError as error:
            _next_sweep("raise an incident", orphan, error)
            return
        self.incidents_created.inc()
        log.info("incident raised on execution %s", orphan.execution_id, extra=orphan.log_context())


def _next_sweep(action: str, orphan: Orphan, error: EngineError) -> None:
    log.warning(
        "could not %s on execution %s (%s); the next sweep tries again",
        action,
        orphan.execution_id,
        type(error).__name__,
        extra=orphan.log_context(),
    )


def incident_message(orphan: Orphan) -> str:
    """What the incident says in Cockpit: what is wrong, why, and what a person can do."""
    since = f" since {orphan.waiting_since.isoformat()}" if orphan.waiting_since else ""
    return (
        "no worker journal knows the reply owed to this instance: it waits for message "
        f"{orphan.message!r}{since}, and no worker will send it (the journal entry was lost "
        "or deleted). Re-run the work by hand and correlate the message (camunda-relay "
        f"correlate {orphan.message} --process-instance {orphan.process_instance_id}), or "
        "cancel the instance. A worker with CAMUNDA_RECONCILE=resume re-runs the work itself "
        "when the history shows the completed task of its reply topic."
    )


def _key(orphan: Orphan) -> tuple[str, str, str]:
    return (orphan.process_instance_id, orphan.execution_id, orphan.message)
