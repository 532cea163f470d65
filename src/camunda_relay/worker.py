"""The worker: fetch and lock, run handlers, complete, and for reply topics correlate later.

Structure (backpressure comes from it): one poll loop fetches at most as many tasks as there
are free slots (``max_in_flight`` tasks holding a lock, ``max_pending_replies`` reply jobs
whose work or delivery is pending); each task runs as its own asyncio task, so one task's
error never touches another; sync handlers run on a thread pool, async ones on the loop.

- plain topic: run the handler while extending the lock; a returned mapping completes the
  task; :class:`~camunda_relay.task.BpmnError` throws a BPMN error; any other exception
  reports a failure with decreasing retries (0 left: an incident, as Camunda intends);
- reply topic: record the job in the journal, complete the task at once, run the handler in
  the background (retried per the retry policy), then correlate the reply message to the
  same process instance (:mod:`camunda_relay.replies.correlator`).

An unreachable engine is retried with capped, jittered backoff, kept apart from "no tasks
right now" (an empty long poll). :meth:`Worker.shutdown` stops fetching at once, lets
in-flight work finish within the grace period, and never reports a failure because of the
shutdown: unfinished reply jobs stay in the journal and resume at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from camunda_relay import variables
from camunda_relay.backoff import Backoff
from camunda_relay.client import EngineClient, TopicRequest
from camunda_relay.errors import (
    AuthenticationFailed,
    EngineError,
    InvalidInput,
    NotFound,
    TaskNotLocked,
)
from camunda_relay.failpoints import Failpoints
from camunda_relay.journal import Journal, open_journal
from camunda_relay.replies.correlator import Correlator
from camunda_relay.replies.job import Job, JobState
from camunda_relay.replies.reconciler import Orphan, Reconciler
from camunda_relay.router import Registration, Router
from camunda_relay.settings import Settings
from camunda_relay.task import BpmnError, RetryLater, Task

__all__ = ["Worker", "WorkerStats", "default_worker_id"]

log = logging.getLogger(__name__)

_MAX_ERROR_MESSAGE = 500
_COMPLETE_ATTEMPTS = 8
POLL_BACKOFF = Backoff(base=timedelta(milliseconds=500), cap=timedelta(seconds=30))


@dataclass
class WorkerStats:
    """Counters a person (or the demo, or a health check) can read while the worker runs."""

    fetched: int = 0
    completed: int = 0
    failures_reported: int = 0
    bpmn_errors: int = 0
    replies_delivered: int = 0
    replies_failed: int = 0
    dropped: int = 0
    taken_over: int = 0  # jobs another worker holds now (this one lost its lease)
    locked: int = 0
    pending_replies: int = 0
    last_poll_ok: float | None = None  # time.monotonic() of the last successful fetch
    engine_errors: int = 0


# Journal states of a job whose task this worker completed (a FAILED job starts afresh when
# its task is offered again: the engine lost the incident with the completion).
_COMPLETED_BEFORE = frozenset({JobState.ACKNOWLEDGED, JobState.DONE, JobState.DELIVERED})


class _TakenOver(Exception):
    """The journal refused a save: another worker holds the job now (this one lost its lease)."""


def default_worker_id() -> str:
    """Unique per process: host, pid and a random part (workers must not share ids)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Worker:
    """Runs the handlers of one or more routers against the engine."""

    def __init__(
        self,
        router: Router,
        settings: Settings,
        *,
        client: EngineClient | None = None,
        journal: Journal | None = None,
        worker_id: str | None = None,
        poll_backoff: Backoff = POLL_BACKOFF,
        failpoints: Failpoints | None = None,
    ) -> None:
        if len(router) == 0:
            raise ValueError("the router has no handlers")
        self.router = router
        self.settings = settings
        self.worker_id = worker_id or settings.worker_id or default_worker_id()
        self._owns_client = client is None
        self.client = client or EngineClient(settings)
        # Durable by default (settings.journal, a SQLite file unless configured otherwise),
        # owned by this worker: its leases mark the jobs this process is working on.
        self.journal: Journal = journal or open_journal(
            settings.journal, owner=self.worker_id, lease=settings.journal_lease
        )
        self.failpoints = failpoints or Failpoints()
        self.correlator = Correlator(self.client)
        # Instances waiting for one of our replies that no journal knows (a lost volume, a
        # job deleted by hand) are reported, or given an incident, as configured.
        replies = sorted({r.reply.message for r in router if r.reply is not None})
        self.reconciler = (
            Reconciler(
                self.client,
                self.journal,
                replies,
                action=settings.reconcile,
                min_age=settings.reconcile_min_age,
                resume=self._adopt,
            )
            if replies and settings.reconcile != "off"
            else None
        )
        self.stats = WorkerStats()
        self._poll_backoff = poll_backoff
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_in_flight, thread_name_prefix="relay-handler"
        )
        self._jobs: set[asyncio.Task[None]] = set()
        self._running: Counter[str] = Counter()  # names of the jobs in self._jobs
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._pending_fetch: asyncio.Task[list[Task]] | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    def stop(self) -> None:
        """Stop fetching at once: no new fetch starts. Safe to call repeatedly."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def shutdown(self, grace: timedelta | None = None) -> None:
        """Stop, let in-flight work finish within ``grace``, then release everything.

        Work still running after the grace period is cancelled without reporting a failure:
        plain tasks are offered again when their lock expires, reply jobs stay in the journal.
        """
        self.stop()
        if self._closed:
            return
        self._closed = True
        grace = grace if grace is not None else self.settings.shutdown_grace
        deadline = time.monotonic() + grace.total_seconds()
        settle = asyncio.ensure_future(self._settle_pending_fetch(grace.total_seconds()))
        if self._jobs:
            _, pending = await asyncio.wait(set(self._jobs), timeout=grace.total_seconds())
            for job in pending:
                job.cancel()
            if pending:
                log.warning("cancelled %d unfinished jobs at shutdown", len(pending))
                await asyncio.wait(pending, timeout=5)
        await asyncio.wait({settle}, timeout=max(deadline - time.monotonic(), 0) + 5)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_client:
            await self.client.aclose()
        try:
            await self.journal.release()  # unfinished jobs: another worker may take them now
        finally:
            await self.journal.close()

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Resume unfinished journal jobs, then fetch and run tasks until :meth:`stop`."""
        log.info(
            "worker %s polling %s at %s (at most %d tasks in flight)",
            self.worker_id,
            ", ".join(self.router.topics),
            self.settings.url,
            self.settings.max_in_flight,
        )
        await self.resume()
        housekeeping = asyncio.ensure_future(self._housekeeping())
        try:
            await self._poll()
        finally:
            housekeeping.cancel()
            await asyncio.wait({housekeeping})

    async def _poll(self) -> None:
        attempt = 0
        while not self.stopping:
            capacity = self._capacity()
            if capacity <= 0:
                self._slot_freed.clear()
                await self._wait_or_stop(self._slot_freed.wait(), None)
                continue
            fetch = self._start_fetch(capacity, self.settings.long_poll)
            await self._wait_or_stop(asyncio.shield(fetch), None)
            if not fetch.done():
                # Stopped during a long poll. The engine keeps the request open and would lock
                # tasks that arrive for this (soon gone) worker until their locks expire, so
                # the request is settled at shutdown and whatever it brings is unlocked.
                self._pending_fetch = fetch
                break
            try:
                tasks = self._fetched(fetch)
            except EngineError as error:
                self.stats.engine_errors += 1
                delay = self._poll_backoff.delay(attempt)
                attempt += 1
                self._log_poll_error(error, delay, attempt)
                await self._wait_or_stop(self._stopping.wait(), delay)
                continue
            except Exception:
                # A bug must not end the loop silently: report it and go on after a pause.
                log.exception("unexpected error in the poll loop")
                await self._wait_or_stop(self._stopping.wait(), self._poll_backoff.delay(attempt))
                attempt += 1
                continue
            attempt = 0
            if self.stopping:
                await self._unlock(tasks)
                break
            for task in tasks:
                self._spawn(task)

    async def run_once(self, *, long_poll: timedelta = timedelta(0)) -> int:
        """Fetch once, run everything fetched to the end (replies delivered); return the
        number of tasks fetched. For tests and scripts: deterministic, no background."""
        await self.resume()
        tasks = await self._fetch_once(max(self._capacity(), 1), long_poll)
        for task in tasks:
            self._spawn(task)
        await self.drain()
        return len(tasks)

    async def drain(self) -> None:
        """Wait until every job started so far has finished."""
        while self._jobs:
            await asyncio.wait(set(self._jobs))

    async def _housekeeping(self) -> None:
        """Renew this worker's leases, and take over jobs whose worker died (their lease ran
        out), at a third of the lease duration."""
        interval = max(self.settings.journal_lease.total_seconds() / 3, 0.5)
        sweep_every = self.settings.reconcile_interval.total_seconds()
        sweep_due = time.monotonic() + min(sweep_every, 30.0)  # the first sweep comes early
        while not self.stopping:
            await self._wait_or_stop(self._stopping.wait(), interval)
            if self.stopping:
                return
            try:
                await self.journal.renew()
                await self.resume()
                if self.reconciler is not None and time.monotonic() >= sweep_due:
                    sweep_due = time.monotonic() + sweep_every
                    await self.reconciler.sweep()
            except Exception:
                log.exception("journal housekeeping failed; trying again")

    async def resume(self) -> int:
        """Claim and restart unfinished journal jobs: this worker's own after a restart, and
        those of workers whose lease ran out."""
        resumed = 0
        # This worker's own jobs are claimed again every round (those running here are
        # skipped): a job left unfinished by an unexpected error, or claimed while history
        # could not tell whether its task was completed, must come back, and no other worker
        # can take it while this one renews its lease.
        for job in await self.journal.claim():
            if f"job:{job.id}" in self._running:
                continue
            if job.task.topic not in self.router:
                log.error("journal job for unregistered topic %r left as is", job.task.topic)
                continue
            registration = self.router[job.task.topic]
            if job.state is JobState.RECORDED:
                # The completion may or may not have reached the engine before the stop.
                completed = await self._completion_confirmed(job.task)
                if completed is None:
                    continue  # history cannot tell right now: ask again next round
                if completed:
                    job = job.advance(JobState.ACKNOWLEDGED)
                    if not await self.journal.save(job):
                        continue  # claimed by another worker meanwhile
                else:
                    await self.journal.save(job.advance(JobState.DROPPED, error="not completed"))
                    continue
            self.stats.pending_replies += 1
            self._start(self._work_and_deliver(job, registration), f"job:{job.id}")
            resumed += 1
        if resumed:
            log.info("resumed %d unfinished reply jobs from the journal", resumed)
        return resumed

    async def _adopt(self, orphan: Orphan) -> bool:
        """Rebuild a lost reply job from the engine and run it (the reconciler's ``resume``).

        False when the history shows no completed task of a reply topic for the orphan's
        message (nothing to rebuild from: the reconciler raises an incident instead).
        """
        topics = {
            registration.topic: registration
            for registration in self.router
            if registration.reply is not None and registration.reply.message == orphan.message
        }
        log_entries = await self.client.external_task_log(
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
        if f"job:{task_id}" in self._running:
            return True
        known = await self.journal.get(task_id)
        if known is not None and known.state is not JobState.DROPPED:
            return True  # recorded meanwhile: a worker has it
        registration = topics[str(entry["topicName"])]
        assert registration.reply is not None
        task = Task(
            id=task_id,
            topic=str(entry["topicName"]),
            worker_id=self.worker_id,
            process_instance_id=orphan.process_instance_id,
            execution_id=entry.get("executionId"),
            activity_id=entry.get("activityId"),
            activity_instance_id=entry.get("activityInstanceId"),
            process_definition_id=entry.get("processDefinitionId"),
            process_definition_key=entry.get("processDefinitionKey"),
            business_key=orphan.business_key,
            tenant_id=entry.get("tenantId"),
            priority=entry.get("priority") or 0,
            variables=await self.client.process_variables(orphan.process_instance_id),
        )
        job = Job(
            task=task,
            message=orphan.message,
            by_business_key=registration.reply.by_business_key,
            state=JobState.ACKNOWLEDGED,
        )
        stored = await (self.journal.record(job) if known is None else self.journal.save(job))
        if not stored:
            return True  # another worker recorded it first
        log.warning(
            "resuming the orphan on execution %s: the work runs again from the instance's "
            "variables, then the reply is sent",
            orphan.execution_id,
            extra=task.log_context(),
        )
        self.stats.pending_replies += 1
        self._start(self._work_and_deliver(job, registration), f"job:{job.id}")
        return True

    # -- fetching --------------------------------------------------------------------------

    def _capacity(self) -> int:
        locks = self.settings.max_in_flight - self.stats.locked
        replies = self.settings.max_pending_replies - self.stats.pending_replies
        return min(locks, replies)

    def _topics(self) -> list[TopicRequest]:
        return [
            TopicRequest(
                topic=registration.topic,
                lock_duration=registration.lock_duration or self.settings.lock_duration,
                variables=registration.variables,
            )
            for registration in self.router
        ]

    def _start_fetch(self, capacity: int, long_poll: timedelta) -> asyncio.Task[list[Task]]:
        return asyncio.ensure_future(
            self.client.fetch_and_lock(
                self.worker_id, self._topics(), max_tasks=capacity, long_poll=long_poll
            )
        )

    def _fetched(self, fetch: asyncio.Task[list[Task]]) -> list[Task]:
        tasks = fetch.result()
        self.stats.last_poll_ok = time.monotonic()
        self.stats.fetched += len(tasks)
        return tasks

    async def _fetch_once(self, capacity: int, long_poll: timedelta) -> list[Task]:
        fetch = self._start_fetch(capacity, long_poll)
        await asyncio.wait({fetch})
        return self._fetched(fetch)

    async def _unlock(self, tasks: list[Task]) -> None:
        """Give fetched tasks back at once (fetched while stopping: nobody will run them)."""
        for task in tasks:
            try:
                await self.client.unlock(task.id)
            except EngineError as error:
                log.warning(
                    "could not unlock a task fetched while stopping (%s); it is offered "
                    "again when its lock expires",
                    type(error).__name__,
                    extra=task.log_context(),
                )
        if tasks:
            log.info("gave back %d tasks fetched while stopping", len(tasks))

    async def _settle_pending_fetch(self, seconds: float) -> None:
        fetch, self._pending_fetch = self._pending_fetch, None
        if fetch is None:
            return
        await asyncio.wait({fetch}, timeout=seconds)
        if not fetch.done():
            fetch.cancel()
            await asyncio.wait({fetch})
            return
        if not fetch.cancelled() and fetch.exception() is None:
            await self._unlock(fetch.result())

    def _log_poll_error(self, error: EngineError, delay: float, attempt: int) -> None:
        level = logging.WARNING if attempt <= 3 or attempt % 10 == 0 else logging.DEBUG
        if isinstance(error, AuthenticationFailed):
            level = logging.ERROR
        log.log(level, "fetch failed: %s; next try in %.1f s", error, delay)

    async def _wait_or_stop(self, awaitable: Any, seconds: float | None) -> None:
        """Wait for ``awaitable``, a stop, or ``seconds``, whichever comes first."""
        waiter = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            for future in (waiter, stopper):
                future.cancel()
                if future.done() and not future.cancelled():
                    future.exception()  # observed here; the caller reads the result itself

    # -- running one task ------------------------------------------------------------------

    def _spawn(self, task: Task) -> None:
        registration = self.router[task.topic]
        self.stats.locked += 1
        if registration.reply is not None:
            self.stats.pending_replies += 1
            self._start(self._run_reply(task, registration), f"job:{task.id}")
        else:
            self._start(self._run_plain(task, registration), f"task:{task.id}")

    def _start(self, coroutine: Any, name: str) -> None:
        job = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._jobs.add(job)
        self._running[name] += 1
        job.add_done_callback(self._finished)

    def _finished(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        name = job.get_name()
        self._running[name] -= 1
        if self._running[name] <= 0:
            del self._running[name]
        self._slot_freed.set()
        if not job.cancelled() and job.exception() is not None:
            error = job.exception()
            log.error(
                "job %s ended with an unexpected error",
                job.get_name(),
                exc_info=(type(error), error, error.__traceback__) if error else None,
            )

    def _release_lock(self) -> None:
        self.stats.locked -= 1
        self._slot_freed.set()

    async def _call(self, registration: Registration, task: Task) -> Mapping[str, object]:
        if registration.is_async:
            result = await registration.handler(task)  # type: ignore[misc]
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, registration.handler, task)
        if result is None:
            return {}
        if not isinstance(result, Mapping):
            raise TypeError(
                f"handler {registration.name} returned a {type(result).__name__}; "
                "expected a mapping of variables or None"
            )
        variables.encode_all(result)  # a value that cannot be sent fails here, naming it
        return result

    async def _run_plain(self, task: Task, registration: Registration) -> None:
        extra = task.log_context()
        lock = registration.lock_duration or self.settings.lock_duration
        keeper = asyncio.ensure_future(self._keep_lock(task, lock))
        try:
            try:
                result = await self._call(registration, task)
            except BpmnError as error:
                keeper.cancel()
                await self._report(self._bpmn_error(task, error), task)
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - a handler's error is an outcome
                keeper.cancel()
                await self._report(self._failure(task, registration, error), task)
                return
            keeper.cancel()
            if await self._complete(task, result):
                self.stats.completed += 1
                log.debug("task completed", extra=extra)
        finally:
            keeper.cancel()
            self._release_lock()

    async def _keep_lock(self, task: Task, lock: timedelta) -> None:
        """Extend the lock at half its duration while a plain handler runs."""
        interval = max(lock.total_seconds() / 2, 0.5)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.client.extend_lock(task.id, self.worker_id, lock)
            except (TaskNotLocked, NotFound):
                log.warning("lock lost while the handler runs", extra=task.log_context())
                return
            except EngineError as error:
                log.warning("lock extension failed (%s)", type(error).__name__)

    async def _report(self, report: Any, task: Task) -> None:
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

    async def _bpmn_error(self, task: Task, error: BpmnError) -> None:
        await self.client.handle_bpmn_error(
            task.id,
            self.worker_id,
            error_code=error.code,
            error_message=error.message,
            variables=error.variables or None,
        )
        self.stats.bpmn_errors += 1
        log.info("BPMN error %r thrown", error.code, extra=task.log_context())

    async def _failure(self, task: Task, registration: Registration, error: Exception) -> None:
        policy = registration.retries if registration.retries is not None else self.settings.retries
        retries = policy if task.retries is None else max(task.retries - 1, 0)
        timeout = registration.retry_timeout or self.settings.retry_timeout
        if isinstance(error, RetryLater):
            retries = error.retries if error.retries is not None else retries
            timeout = error.after if error.after is not None else timeout
        await self.client.handle_failure(
            task.id,
            self.worker_id,
            error_message=_describe(error),
            error_details="".join(traceback.format_exception(error)),
            retries=retries,
            retry_timeout=timeout,
        )
        self.stats.failures_reported += 1
        log.warning(
            "handler failed (%s); %d retries left",
            type(error).__name__,
            retries,
            extra=task.log_context(),
        )

    async def _complete(self, task: Task, result: Mapping[str, object] | None) -> bool | None:
        """Complete the task, retrying transient errors. False when the task is not ours (or
        not completed); None when no try was answered and history cannot tell whether one
        went through (a lost answer, then an outage)."""
        extra = task.log_context()
        uncertain = False
        for attempt in range(_COMPLETE_ATTEMPTS):
            try:
                await self.client.complete(task.id, self.worker_id, result or None)
                return True
            except TaskNotLocked:
                log.warning("lock lost before completion; task dropped", extra=extra)
                return False
            except NotFound:
                if uncertain:
                    # An earlier try may have completed it (its response lost). When history
                    # cannot tell, go on as completed: a reply that finds no instance ends
                    # in a logged failure, a dropped one in a silent forever-wait.
                    confirmed = await self._completion_confirmed(task)
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
                await asyncio.sleep(self._poll_backoff.delay(attempt))
        if uncertain:
            confirmed = await self._completion_confirmed(task)
            if confirmed:
                log.info("completion confirmed from history after failed tries", extra=extra)
                return True
            if confirmed is None:
                log.error(
                    "completion failed %d times and history cannot tell whether a try went "
                    "through; decided from history later",
                    _COMPLETE_ATTEMPTS,
                    extra=extra,
                )
                return None
        log.error(
            "completion failed %d times; task left to its lock", _COMPLETE_ATTEMPTS, extra=extra
        )
        return False

    async def _completion_confirmed(self, task: Task, attempts: int = 5) -> bool | None:
        """Whether history shows the task completed; None when it cannot be told."""
        for attempt in range(attempts):
            try:
                return await self.client.external_task_completed(task.id)
            except EngineError as error:
                if not error.retryable:
                    return None
                await asyncio.sleep(self._poll_backoff.delay(attempt))
        return None

    # -- reply topics ----------------------------------------------------------------------

    async def _run_reply(self, task: Task, registration: Registration) -> None:
        reply = registration.reply
        assert reply is not None
        locked = True
        try:
            job = Job(task=task, message=reply.message, by_business_key=reply.by_business_key)
            await self.failpoints.hit("after_fetch")
            if not await self.journal.record(job):
                known = await self.journal.get(job.id)
                if known is not None and known.state in _COMPLETED_BEFORE:
                    locked = False  # _complete_again releases it
                    await self._complete_again(known, registration)
                    return
                await self._keep(job)
            await self.failpoints.hit("after_record")
            try:
                ack_variables = _complete_variables(registration, task)
                completed = await self._complete(task, ack_variables)
            except InvalidInput as error:
                await self._report(self._failure(task, registration, error), task)
                completed = False
            locked = False
            self._release_lock()
            if completed is None:
                pass  # the job stays recorded until history tells (below)
            elif not completed:
                await self.journal.save(job.advance(JobState.DROPPED, error="not completed"))
                self.stats.dropped += 1
                self.stats.pending_replies -= 1
                return
            else:
                job = await self._acknowledged(job)
        except _TakenOver:
            if locked:
                self._release_lock()
            self.stats.pending_replies -= 1
            self._left(job)
            return
        except BaseException:
            if locked:
                self._release_lock()
            self.stats.pending_replies -= 1
            raise
        if job.state is JobState.RECORDED:
            await self._decide_later(job, registration)
            return
        await self._work_and_deliver(job, registration, counted=True)

    async def _complete_again(self, known: Job, registration: Registration) -> None:
        """The engine offers a task this worker completed: it lost the completion (a database
        restored from a backup, an H2 engine killed before it wrote its last commits). The
        work is not run again; the task is completed again so that the instance moves on to
        the catch event, and a reply already delivered is delivered again (the engine lost it
        too). The fetch's lock slot and pending-reply count end here."""
        task = known.task
        log.warning(
            "the engine offers a task this worker completed (job %s): it lost the "
            "completion; completing it again without running the work",
            known.state.value,
            extra=task.log_context(),
        )
        handed_on = False  # to _work_and_deliver, which counts the pending reply down itself
        try:
            try:
                completed = await self._complete(task, _complete_variables(registration, task))
            except InvalidInput:
                completed = False
            finally:
                self._release_lock()
            if completed and known.state is JobState.DELIVERED:
                again = known.advance(JobState.DONE)
                if await self.journal.save(again):
                    handed_on = True
                    await self._work_and_deliver(again, registration)
            # ACKNOWLEDGED or DONE: the job runs (here or at the worker holding it); its
            # reply, retried while the instance was not waiting yet, now finds it waiting.
        finally:
            if not handed_on:
                self.stats.pending_replies -= 1

    async def _acknowledged(self, job: Job) -> Job:
        await self.failpoints.hit("after_complete_before_work")
        # One write for "acknowledged" and "first attempt started".
        job = await self._keep(job.advance(JobState.ACKNOWLEDGED, attempts=1))
        self.stats.completed += 1
        log.debug("task completed; work runs in the background", extra=job.task.log_context())
        return job

    async def _decide_later(self, job: Job, registration: Registration) -> None:
        """Ask history, with backoff, whether the task was completed; then run the job or
        drop it. At a stop the job stays recorded, and the next start decides."""
        attempt = 0
        handed_on = False  # to _work_and_deliver, which counts the pending reply down itself
        try:
            while not self.stopping:
                await self._wait_or_stop(self._stopping.wait(), self._poll_backoff.delay(attempt))
                if self.stopping:
                    break
                completed = await self._completion_confirmed(job.task)
                attempt += 1
                if completed is None:
                    continue
                if not completed:
                    await self.journal.save(job.advance(JobState.DROPPED, error="not completed"))
                    self.stats.dropped += 1
                    break
                job = await self._acknowledged(job)
                handed_on = True
                await self._work_and_deliver(job, registration, counted=True)
                break
        except _TakenOver:
            self._left(job)
        finally:
            if not handed_on:
                self.stats.pending_replies -= 1

    async def _keep(self, job: Job) -> Job:
        """Save ``job``; :class:`_TakenOver` when another worker holds it now."""
        if not await self.journal.save(job):
            raise _TakenOver(job.id)
        return job

    def _left(self, job: Job) -> None:
        self.stats.taken_over += 1
        log.warning(
            "this worker lost its journal lease and another worker holds the job now; "
            "leaving the job to it",
            extra=job.task.log_context(),
        )

    async def _work_and_deliver(
        self, job: Job, registration: Registration, *, counted: bool = False
    ) -> None:
        try:
            if job.state is JobState.ACKNOWLEDGED:
                job = await self._work(job, registration, counted=counted)
            if job.state is JobState.DONE:
                await self.failpoints.hit("after_work_before_correlate")
                job = await self.correlator.deliver(job)
                if job.state is JobState.DELIVERED:
                    await self.failpoints.hit("after_correlate_before_journal")
                await self._keep(job)
        except _TakenOver:
            self._left(job)
            return
        else:
            if job.state is JobState.DELIVERED:
                self.stats.replies_delivered += 1
                log.info("reply %r delivered", job.message, extra=job.task.log_context())
            elif job.state is JobState.FAILED:
                self.stats.replies_failed += 1
        finally:
            self.stats.pending_replies -= 1
            self._slot_freed.set()

    async def _work(self, job: Job, registration: Registration, *, counted: bool) -> Job:
        """Run the handler until it succeeds or the retries are used up. ``counted``: the
        first attempt is already on record (saved together with the acknowledgement)."""
        policy = registration.retries if registration.retries is not None else self.settings.retries
        timeout = registration.retry_timeout or self.settings.retry_timeout
        while True:
            if not counted:  # every attempt is on record before it starts
                job = job.advance(JobState.ACKNOWLEDGED, attempts=job.attempts + 1)
                await self._keep(job)
            counted = False
            try:
                await self.failpoints.hit("mid_work")
                result = await self._call(registration, job.task)
            except asyncio.CancelledError:
                raise
            except BpmnError as error:
                job = await self.correlator.fail(
                    job,
                    f"BPMN error {error.code!r} cannot be thrown by a reply topic: its task was "
                    "already completed; model the error path after the catch event instead",
                )
                return await self._keep(job)
            except Exception as error:  # noqa: BLE001 - a handler's error is an outcome
                if job.attempts > policy:
                    job = await self.correlator.fail(
                        job, f"work failed after {job.attempts} attempts: {_describe(error)}"
                    )
                    return await self._keep(job)
                log.warning(
                    "work failed (%s), attempt %d of %d",
                    type(error).__name__,
                    job.attempts,
                    policy + 1,
                    extra=job.task.log_context(),
                )
                await asyncio.sleep(timeout.total_seconds())
                continue
            # The delivery deadline counts from the end of the work, however long it took.
            reply = registration.reply
            allowed = (reply.deadline if reply else None) or self.settings.reply_deadline
            job = job.advance(
                JobState.DONE,
                result=dict(result),
                deadline=time.time() + allowed.total_seconds(),
            )
            return await self._keep(job)


def _complete_variables(registration: Registration, task: Task) -> Mapping[str, object] | None:
    reply = registration.reply
    if reply is None or reply.complete_variables is None:
        return None
    values = reply.complete_variables
    produced = values(task) if callable(values) else values
    variables.encode_all(produced)
    return produced


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _MAX_ERROR_MESSAGE else text[: _MAX_ERROR_MESSAGE - 1] + "…"
