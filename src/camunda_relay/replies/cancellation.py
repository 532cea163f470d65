"""Which running reply jobs' instances no longer wait, and never will, for their replies:
cancelled or deleted (Cockpit, ``DELETE /process-instance/{id}``), ended, or moved past the
catch event (an interrupting boundary event, someone else's message).

One batched question a round, whatever the number of jobs (:meth:`InstanceCheck.gone`):

1. ``POST /process-instance`` with the jobs' ``processInstanceIds`` and ``activityIdIn`` their
   catch events: the instances waiting at a catch event now. In a model where the catch
   event follows the task directly (no async continuation), that is every instance, and the
   round ends here. One query per :data:`PAGE` instances: the engine's cost of an id list
   grows faster than the list (measured on H2: 1,000 ids 0.3-0.6 s, 3,000 ids 3.5 s, 9,000
   ids 17 s), so long lists go in pages of 1,000.
2. Only for the others, ``POST /history/process-instance`` with their ids: those that have
   an end are gone ("the process instance was cancelled" when it was cancelled or deleted,
   ``EXTERNALLY_TERMINATED``; "the process instance ended" otherwise).
3. Only for those still running but not at the catch event, and at most ``history_checks``
   a round (the ones checked longest ago first): the instance's activity history. A passage
   of the job's catch event *in the job's round* (it started after the job's task ended, as
   the correlator counts rounds) that has ended means the instance moved past it. No passage
   yet means it has still to get there (an async continuation, a path before the catch
   event): not gone.

Never a false cancel: every "gone" rests on what the engine positively says (an end in
history, an ended passage of this round). An instance the runtime does not list but history
does not show ended (history that lags, an engine that keeps none, a user without the right
to read it) is not gone; an engine that does not answer decides nothing (the caller skips
the round). Limits: a catch event behind an event-based gateway, or a message boundary
event on a task, has no passage until it fires, so an instance that takes another way there
is seen only once it ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from camunda_relay.client import EngineClient
from camunda_relay.errors import EngineError
from camunda_relay.replies.correlator import CANCELLED, ENDED, round_start
from camunda_relay.replies.job import Job
from camunda_relay.variables import engine_date

__all__ = ["CANCELLED", "ENDED", "MOVED_ON", "PAGE", "InstanceCheck"]

PAGE = 1_000
"""Instance ids per query (see the module docstring)."""

MOVED_ON = "the process instance moved past the catch event"

CatchActivities = Callable[[Job], Awaitable[frozenset[str]]]
"""The ids of the elements that wait for a job's message (cached by the correlator)."""


class InstanceCheck:
    """Asks the engine which jobs' instances are gone; :class:`~camunda_relay.errors.EngineError`
    when it does not answer (nothing is decided then)."""

    def __init__(
        self, client: EngineClient, catch_activities: CatchActivities, *, history_checks: int = 20
    ) -> None:
        self._client = client
        self._catch_activities = catch_activities
        self._history_checks = history_checks
        self._checked: dict[str, int] = {}  # instance id -> round of its last history check
        self._round = 0

    async def gone(self, jobs: Sequence[Job]) -> dict[str, str]:
        """Job id -> why its instance no longer waits, for the jobs that are gone."""
        self._round += 1
        catch: dict[str, frozenset[str]] = {}
        for job in jobs:
            try:
                ids = await self._catch_activities(job)
            except EngineError as error:
                if error.retryable:
                    raise
                continue  # its model cannot be read (gone, no right to): not decided
            if ids:  # a model without the catch event: the correlator reports that
                catch[job.id] = ids
        watched = [job for job in jobs if job.id in catch]
        if not watched:
            return {}
        waiting = await self._waiting(watched, frozenset().union(*catch.values()))
        rest = [job for job in watched if job.task.process_instance_id not in waiting]
        if not rest:
            self._checked.clear()
            return {}
        ended = await self._ended({job.task.process_instance_id for job in rest})
        found = {
            job.id: ended[job.task.process_instance_id]
            for job in rest
            if job.task.process_instance_id in ended
        }
        running = [job for job in rest if job.id not in found]
        found.update(await self._moved_on(running, catch))
        return found

    async def _waiting(self, jobs: Sequence[Job], activity_ids: frozenset[str]) -> set[str]:
        instances = sorted({job.task.process_instance_id for job in jobs})
        waiting: set[str] = set()
        for page in _pages(instances):
            found = await self._client.process_instances(page, activity_ids=sorted(activity_ids))
            waiting.update(str(item.get("id")) for item in found)
        return waiting

    async def _ended(self, instances: set[str]) -> dict[str, str]:
        """Instance id -> reason, for the instances history shows ended."""
        ended: dict[str, str] = {}
        for page in _pages(sorted(instances)):
            found = await self._client.historic_process_instances(process_instance_ids=page)
            for item in found:
                if item.get("endTime") is None:
                    continue
                cancelled = item.get("state") == "EXTERNALLY_TERMINATED"
                ended[str(item.get("id"))] = CANCELLED if cancelled else ENDED
        return ended

    async def _moved_on(
        self, jobs: Sequence[Job], catch: dict[str, frozenset[str]]
    ) -> dict[str, str]:
        """The running instances not at their catch event that passed it in the job's round:
        a bounded number of history look-ups a round, the ones checked longest ago first."""
        current = {job.task.process_instance_id for job in jobs}
        self._checked = {i: r for i, r in self._checked.items() if i in current}
        jobs = sorted(jobs, key=lambda job: self._checked.get(job.task.process_instance_id, 0))
        found: dict[str, str] = {}
        for job in jobs[: self._history_checks]:
            instance = job.task.process_instance_id
            self._checked[instance] = self._round
            passages = await self._client.historic_activity_instances(process_instance_id=instance)
            since = round_start(passages, job.task.activity_instance_id)
            if since is None:
                continue  # the round cannot be told (no task passage in history yet)
            for passage in passages:
                if passage.get("activityId") not in catch[job.id]:
                    continue
                started = engine_date(passage.get("startTime"))
                in_round = started is not None and started >= since
                if in_round and passage.get("endTime") is not None:
                    found[job.id] = MOVED_ON
                    break
        return found


def _pages(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[start : start + PAGE] for start in range(0, len(items), PAGE)]
