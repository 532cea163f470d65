"""Recovery: keep this worker's journal lease alive, take over jobs nobody runs (a dead
peer's, a restart's, one given back), adopt orphans for the reconciler, and check that the
engine keeps the history the worker relies on.

Three loops, each on its own so that none waits behind another: the lease renewal (a third
of the lease; one small write), the claim round (jobs of this worker's reply topics, taken
under its fetch filters, held by nobody, by an owner whose lease ran out, or by this worker
id with no runner here, at most as many as there are free reply slots),
and the sweep: the reconciler's, and the pruning of finished jobs older than
``CAMUNDA_JOURNAL_RETENTION``, by one worker at a time of those sharing a journal
(:mod:`camunda_relay.journal.sweep_lock`). A journal found empty at start (new, or lost) is swept at
once instead of after the first interval.
"""

from __future__ import annotations

import logging
from typing import Any

from camunda_relay.errors import EngineError, JournalError
from camunda_relay.journal.sweep_lock import sweep_lock
from camunda_relay.replies.job import Job, JobState
from camunda_relay.replies.reconciler import Orphan, Reconciler
from camunda_relay.task import Task
from camunda_relay.worker.context import Context
from camunda_relay.worker.replies import Replies

__all__ = ["CLAIM_BATCH", "Recovery"]

log = logging.getLogger(__name__)

CLAIM_BATCH = 500  # jobs one claim statement takes at most (a round claims batch after batch)
MAX_BATCHES = 100  # claims in one round at most (50,000 jobs; the next round goes on)
PRUNE_EVERY = 3600.0  # seconds between two prunings of finished journal jobs
FIRST_SWEEP = 30.0  # seconds to the first sweep (at once when the journal is empty)
SWEEP_ALLOWANCE = 900.0  # seconds one sweep (paged queries, history per instance) may take


class Recovery:
    def __init__(self, ctx: Context, replies: Replies, reconciler: Reconciler | None) -> None:
        self._ctx = ctx
        self._replies = replies
        self.reconciler = reconciler
        self.sweep_now = False  # the journal was empty at start: sweep at once
        self._next_prune = ctx.clock.monotonic()

    @property
    def interval(self) -> float:
        return max(self._ctx.settings.journal_lease.total_seconds() / 3, 0.5)

    # -- the lease ---------------------------------------------------------------------------

    async def renew(self) -> bool:
        """Renew this worker's lease; False when the journal does not answer."""
        ctx = self._ctx
        try:
            await ctx.journal.renew()
        except JournalError as error:
            ctx.journal_health.failed(error, "renewed the lease")
            ctx.stats.journal_errors += 1
            return False
        ctx.journal_health.answered()
        return True

    async def keep_lease(self) -> None:
        # Liveness beats: the wait, then the call (a journal call is bounded by its timeout).
        health = self._ctx.health
        health.beat("lease", 2 * self.interval)
        while await self._ctx.stop.wait(self.interval):
            await self.renew()
            health.beat("lease", 2 * self.interval)

    # -- claiming ----------------------------------------------------------------------------

    async def resume(self) -> int:
        """One claim round: claim and start the unfinished jobs this worker will run that
        nobody runs: those of its reply topics under its fetch filters, held by nobody, by a
        dead owner, or by this worker id with no runner here (a restart under the same id).
        Batch after batch while batches come back full and reply slots are free, so that a
        round leaves none of them waiting for the next (docs/journal.md: who runs a job)."""
        started = 0
        for _ in range(MAX_BATCHES):
            taken, full = await self._claim_batch()
            started += taken
            if not full:
                break
        if started:
            log.info("resumed %d unfinished reply jobs from the journal", started)
        return started

    async def _claim_batch(self) -> tuple[int, bool]:
        """One claim of at most :data:`CLAIM_BATCH` jobs: how many started, and whether the
        batch came back full."""
        ctx = self._ctx
        topics = ctx.reply_topics
        room = min(ctx.slots.replies.free, CLAIM_BATCH)
        if not topics or room <= 0:
            return 0, False
        try:
            jobs = await ctx.journal.claim(
                topics=topics, limit=room, filters=ctx.filter_keys, running=ctx.runs.held()
            )
        except JournalError as error:
            ctx.journal_health.failed(error, "claimed jobs")
            ctx.stats.journal_errors += 1
            return 0, False
        started = 0
        now = ctx.clock.wall()
        for job in jobs:
            if f"task:{job.id}" in ctx.runs:
                continue  # recorded meanwhile by a fetch here, which runs it
            if job.state is JobState.DONE and job.deadline is not None:
                # The time nobody ran the job does not count against its deadline.
                away = max(now - job.updated_at, 0.0)
                job = job.advance(JobState.DONE, deadline=job.deadline + away, at=job.updated_at)
            registration = ctx.router[job.task.topic]
            if self._replies.start(job, registration, ctx.slots.replies.take(), counted=False):
                started += 1
        return started, len(jobs) == room and not ctx.stop.stopping

    async def check_filters(self) -> None:
        """Name, at start, the unfinished jobs of this worker's reply topics taken under
        other fetch filters than its own: no claim of this worker takes them, only one of a
        worker registered with the same filters (a WARNING, once)."""
        ctx = self._ctx
        mine = ctx.filter_keys
        try:
            found = await ctx.journal.filter_keys(mine)
        except JournalError as error:
            log.debug("the journal's fetch filters not checked (%s)", type(error).__name__)
            return
        for (topic, key), count in sorted(found.items()):
            if key != mine.get(topic):
                log.warning(
                    "the journal holds %d unfinished jobs of topic %r taken under other fetch "
                    "filters (key %r) than this worker's (key %r): only a worker registered "
                    "with the same filters takes them over",
                    count,
                    topic,
                    key,
                    mine.get(topic, ""),
                )

    async def keep_claiming(self) -> None:
        health = self._ctx.health
        health.beat("claim", 2 * self.interval)
        while await self._ctx.stop.wait(self.interval):
            try:
                if self._ctx.history_full is None:
                    await self.check_history()
                await self.resume()
            except Exception:
                log.exception("taking over journal jobs failed; trying again")
            health.beat("claim", 2 * self.interval)

    # -- the reconciler ----------------------------------------------------------------------

    async def keep_sweeping(self) -> None:
        """The reconciler's sweep every ``CAMUNDA_RECONCILE_INTERVAL`` (the first one early,
        at once after an empty journal), and the pruning of finished jobs."""
        ctx = self._ctx
        every = ctx.settings.reconcile_interval.total_seconds() if self.reconciler else PRUNE_EVERY
        wait = 0.0 if self.sweep_now else min(every, FIRST_SWEEP)
        health = ctx.health
        health.beat("reconcile", wait)
        while await ctx.stop.wait(wait):
            health.beat("reconcile", SWEEP_ALLOWANCE)
            wait = every
            try:
                await self.sweep()
            except Exception:
                log.exception("reconciliation sweep failed; trying again")
            finally:
                health.beat("reconcile", wait)

    async def sweep(self) -> bool:
        """One turn: the pruning (when due) and the reconciler's sweep, under the journal's
        sweep lock, so that one worker of those sharing a journal sweeps at a time; False
        when another worker holds the lock (or it cannot be asked for) and this turn is
        skipped."""
        ctx = self._ctx
        try:
            async with sweep_lock(ctx.journal) as held:
                if not held:
                    log.debug("another worker sweeps this journal now; skipping this turn")
                    return False
                if ctx.clock.monotonic() >= self._next_prune:
                    self._next_prune = ctx.clock.monotonic() + PRUNE_EVERY
                    await self.prune()
                if self.reconciler is not None:
                    await self.reconciler.sweep()
        except JournalError as error:
            log.warning("no sweep this turn: %s", error)
            return False
        return True

    async def prune(self) -> int:
        """Delete finished jobs older than ``CAMUNDA_JOURNAL_RETENTION``; how many went."""
        ctx = self._ctx
        cutoff = ctx.clock.wall() - ctx.settings.journal_retention.total_seconds()
        try:
            pruned = await ctx.journal.prune(finished_before=cutoff)
        except JournalError as error:
            log.warning("pruning finished journal jobs failed (%s)", type(error).__name__)
            return 0
        if pruned:
            log.info("deleted %d finished journal jobs past the retention", pruned)
        return pruned

    # -- history -----------------------------------------------------------------------------

    async def check_history(self) -> None:
        """Whether the engine keeps the external-task history (level ``full``) that confirms
        a completion or a delivery whose answer was lost. Told from the first completion in
        the history; says clearly what cannot be guaranteed when it is missing."""
        ctx = self._ctx
        try:
            ctx.history_full = await ctx.client.keeps_full_history()
        except EngineError as error:
            log.debug("history level not checked yet (%s)", type(error).__name__)
            return
        if ctx.history_full is False:
            log.error(
                "the engine keeps no external-task history (history level below 'full'): a "
                "completion or a reply whose answer was lost cannot be confirmed; such a job "
                "goes on as completed, and a reply it cannot deliver ends in an incident. Set "
                "the engine's history level to full"
            )

    # -- orphans -----------------------------------------------------------------------------

    async def adopt(self, orphan: Orphan) -> bool:
        """Rebuild a lost reply job from the engine and run it (the reconciler's ``resume``).

        False when the history shows no completed task of a reply topic for the orphan's
        message (nothing to rebuild from: the reconciler raises an incident instead).
        """
        ctx = self._ctx
        topics = {
            registration.topic: registration
            for registration in ctx.router
            if registration.reply is not None and registration.reply.message == orphan.message
        }
        log_entries = await ctx.client.external_task_log(
            process_instance_id=orphan.process_instance_id, success_only=True
        )
        completed = [e for e in log_entries if e.get("topicName") in topics]
        if not completed:
            log.warning(
                "cannot resume the orphan on execution %s: the history shows no completed "
                "task of topic %s",
                orphan.execution_id,
                " or ".join(repr(topic) for topic in sorted(topics)),
                extra=orphan.log_context(),
            )
            return False
        entry = completed[-1]  # the latest completion: the one whose reply is owed
        task_id = str(entry["externalTaskId"])
        if f"job:{task_id}" in ctx.runs:
            return True
        known = await ctx.journal.get(task_id)
        if known is not None and known.state is not JobState.DROPPED:
            return True  # recorded meanwhile: a worker has it
        registration = topics[str(entry["topicName"])]
        assert registration.reply is not None
        task = await self._rebuilt(orphan, entry, task_id)
        if registration.filters is not None and not registration.filters.matches(task):
            log.warning(
                "not resuming the orphan on execution %s: its task is not one this worker's "
                "fetch filters of topic %r take (or a version tag cannot be told); left to a "
                "worker whose filters match",
                orphan.execution_id,
                registration.topic,
                extra=orphan.log_context(),
            )
            return True
        job = Job(
            task=task,
            message=orphan.message,
            by_business_key=registration.reply.by_business_key,
            state=JobState.ACKNOWLEDGED,
            filter_key=registration.filter_key,
        )
        stored = await (ctx.journal.record(job) if known is None else ctx.journal.save(job))
        if not stored:
            return True  # another worker recorded it first
        log.warning(
            "resuming the orphan on execution %s: the work runs again from the instance's "
            "variables, then the reply is sent",
            orphan.execution_id,
            extra=task.log_context(),
        )
        self._replies.start(job, registration, ctx.slots.replies.take(), counted=False)
        return True

    async def _rebuilt(self, orphan: Orphan, entry: dict[str, Any], task_id: str) -> Task:
        """The orphan's task, from its history log entry and the instance's variables."""
        ctx = self._ctx
        return Task(
            id=task_id,
            topic=str(entry["topicName"]),
            worker_id=ctx.worker_id,
            process_instance_id=orphan.process_instance_id,
            execution_id=entry.get("executionId"),
            activity_id=entry.get("activityId"),
            activity_instance_id=entry.get("activityInstanceId"),
            process_definition_id=entry.get("processDefinitionId"),
            process_definition_key=entry.get("processDefinitionKey"),
            business_key=orphan.business_key,
            tenant_id=entry.get("tenantId"),
            priority=entry.get("priority") or 0,
            variables=await ctx.client.process_variables(orphan.process_instance_id),
        )
