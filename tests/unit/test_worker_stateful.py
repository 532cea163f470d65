"""The worker's promises under random interleavings of faults, crashes and restarts.

A hypothesis state machine (FAULTS.md, "Faster layer") drives real :class:`Worker` objects
against the in-process fake engine: instances start, the engine loses responses, answers
503/500/404, takes locks away, lets instances reach the catch event late, cancels them;
workers crash mid-flight (their asyncio tasks are cancelled, nothing is released, as after
``kill -9``) or are stopped gracefully, and a new worker takes over the shared journal. After
every step it checks:

- **I2**: every instance passed its catch event at most once, and a job the journal calls
  delivered did pass it, with its own result;
- **I3**: the side-effect ledger holds at most one applied effect per instance (the handler
  applies its effect once per job id, the idempotency key), and no work started before its
  task was completed in the engine;
- **no job lost**: every instance whose task was completed is finished or has an unfinished
  job in the journal; no job failed and no incident was raised except for cancelled instances;
- **who runs a job**: two pods serve the topic, each registered for a tenant of its own
  (``tenant_ids``), on the one journal; no handler runs on a task its registration would not
  have fetched, and no job is held, longer than one claim round, by a live worker that does
  not run it. Pods crash and come back under the same worker id (a Kubernetes container
  restart), under a new one, or only later; a claim round takes at most one job, so a
  restart needs several.

At the end, with the faults gone and the locks expired, every instance that was not cancelled
must pass its catch event exactly once and have exactly one applied effect.

Time is virtual: the event loop's clock jumps to the next timer when nothing is ready, so
backoffs, long polls and work take no wall time, and a run is repeatable (hypothesis is
derandomized, the backoff jitter seeded). The journal is a shared :class:`MemoryJournal`:
the SQLite and PostgreSQL journals pass the same contract suite
(tests/unit/test_journal_contract.py), and a memory journal keeps the loop free of threads,
which would make the virtual clock jump while the disk is written.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
from collections import defaultdict
from collections.abc import Callable, Collection, Coroutine, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from camunda_relay import (
    EngineClient,
    Job,
    JobState,
    MemoryJournal,
    Router,
    Settings,
    Task,
    Worker,
)
from camunda_relay import backoff as backoff_module
from camunda_relay.backoff import Backoff
from camunda_relay.errors import EngineError
from camunda_relay.journal.base import UnreadableJob
from camunda_relay.worker import recovery
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine, Fault

T = TypeVar("T")

SETTINGS = Settings(
    url="http://fake-engine/engine-rest",
    journal=":memory:",
    max_in_flight=2,
    long_poll=timedelta(milliseconds=200),
    # Every attempt counts, crashed ones too (a job that kills its worker must not run for
    # ever), so within a run's few dozen steps the work never fails for good.
    retries=100,
    retry_timeout=timedelta(milliseconds=200),
    journal_lease=timedelta(seconds=3),  # housekeeping (renew, resume) every second
    shutdown_grace=timedelta(seconds=1),
    reply_deadline=timedelta(hours=1),
    # A cancellation round every second: a cancelled instance's running work is cancelled
    # within a few steps (WORK is half a second).
    cancel_check_interval=timedelta(seconds=1),
    cancel_grace=timedelta(milliseconds=300),
)
# Regression tests below start from a crashed worker whose lease has run out.
EXPIRED_LEASE = timedelta(seconds=-1)
POLL_BACKOFF = Backoff(base=timedelta(milliseconds=50), cap=timedelta(seconds=1))
WORK = 0.5  # seconds of (virtual) work per attempt
MAX_INSTANCES = 8
# 503s from the history queries the worker uses to confirm a lost response (the regression
# tests at the end of this file pin what they once exposed).
HISTORY_FAULTS = True
COMPLETE_FAULTS = {
    "lose": Fault("lose"),
    "503": Fault("status", 503),
    "404": Fault("status", 404, "External task does not exist", "InvalidRequestException"),
}
CORRELATE_FAULTS = {"lose": Fault("lose"), "503": Fault("status", 503), "500": Fault("status", 500)}
FETCH_FAULTS = {"lose": Fault("lose"), "503": Fault("status", 503)}
SETTLE_SECONDS = 120  # longer than any backoff once the faults are gone
PODS = {"a": "tenant-a", "b": "tenant-b"}  # pod -> the one tenant its registration fetches
CLAIM_BATCH = 1  # jobs one claim round takes at most: a restart needs several rounds
CLAIM_ROUND = SETTINGS.journal_lease.total_seconds() / 3  # the claim loop's interval
HELD_IDLE_LIMIT = 2 * CLAIM_ROUND  # one round's wait, plus the round itself


# -- a virtual clock for asyncio ---------------------------------------------------------------


class _VirtualSelector(selectors.DefaultSelector):
    """Never sleeps: when the loop would wait for its next timer, the clock jumps there."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("deadlock: nothing is ready and no timer is due")
        self._loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self.now


class LoopClock:
    """The worker's and the journal's clock on the virtual loop: leases and deadlines run out
    in virtual time, as backoffs and long polls do."""

    EPOCH = 1_800_000_000.0

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop

    def wall(self) -> float:
        return self.EPOCH + self._loop.now

    def monotonic(self) -> float:
        return self._loop.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


def _quiet_about_the_dead(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A crashed worker's fetch may fail after the crash, and nobody reads its result (as in
    a killed process); anything else is reported as usual."""
    if isinstance(context.get("exception"), EngineError):
        return
    loop.default_exception_handler(context)


def _at_once(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits (every MemoryJournal method)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("the coroutine waited")


class _SlowJournal:
    """A journal view whose every call lets the loop run before and after it, as a disk
    would: a crash can land just before or just after each write."""

    def __init__(self, inner: MemoryJournal) -> None:
        self._inner = inner
        self.owner = inner.owner
        self.durable = inner.durable

    async def _io(self, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        await asyncio.sleep(0)
        result = await call()
        await asyncio.sleep(0)
        return result

    async def record(self, job: Job) -> bool:
        return await self._io(lambda: self._inner.record(job))

    async def save(self, job: Job, *, synced: bool = True) -> bool:
        return await self._io(lambda: self._inner.save(job, synced=synced))

    async def get(self, job_id: str) -> Job | None:
        return await self._io(lambda: self._inner.get(job_id))

    async def unfinished(self) -> list[Job]:
        return await self._io(lambda: self._inner.unfinished())

    async def unfinished_instances(self) -> set[str]:
        return await self._io(lambda: self._inner.unfinished_instances())

    async def jobs(self, *, states: Collection[JobState] | None = None) -> list[Job]:
        return await self._io(lambda: self._inner.jobs(states=states))

    async def claim(
        self,
        *,
        topics: Collection[str],
        limit: int = 100,
        filters: Mapping[str, str] | None = None,
        running: Collection[str] = (),
    ) -> list[Job]:
        return await self._io(
            lambda: self._inner.claim(topics=topics, limit=limit, filters=filters, running=running)
        )

    async def unreadable(self) -> list[UnreadableJob]:
        return await self._io(lambda: self._inner.unreadable())

    async def filter_keys(self, topics: Collection[str]) -> dict[tuple[str, str], int]:
        return await self._io(lambda: self._inner.filter_keys(topics))

    async def renew(self) -> None:
        await self._io(lambda: self._inner.renew())

    async def release(self, job_id: str | None = None) -> None:
        await self._io(lambda: self._inner.release(job_id))

    async def counts(self) -> dict[JobState, int]:
        return await self._io(lambda: self._inner.counts())

    async def delete(self, job_id: str) -> bool:
        return await self._io(lambda: self._inner.delete(job_id))

    async def prune(self, *, finished_before: float) -> int:
        return await self._io(lambda: self._inner.prune(finished_before=finished_before))

    async def close(self) -> None:
        await self._inner.close()


# -- the machine ---------------------------------------------------------------------------------


class Ledger:
    """The handler's side effects: raw attempts (re-runs are allowed) and applied effects,
    applied once per job id as a careful handler would (its idempotency key)."""

    def __init__(self, fake: FakeEngine) -> None:
        self.fake = fake
        self.attempts: list[str] = []
        self.applied: dict[str, str] = {}  # job id -> instance id
        self.violations: list[str] = []
        self.flaky: set[str] = set()  # instances whose next attempt fails

    def work_for(self, pod: str) -> Callable[[Task], Coroutine[Any, Any, dict[str, object]]]:
        """The handler of ``pod``'s registration, which must see its own tenant's tasks only."""

        async def work(task: Task) -> dict[str, object]:
            if task.tenant_id != PODS[pod]:
                self.violations.append(f"pod {pod} ran {task.id} of tenant {task.tenant_id}")
            return await self.work(task)

        return work

    async def work(self, task: Task) -> dict[str, object]:
        self.attempts.append(task.job_id)
        if not self.fake.tasks[task.id].done:
            self.violations.append(f"work on {task.id} started before its task was completed")
        await asyncio.sleep(WORK)
        if task.process_instance_id in self.flaky:
            self.flaky.discard(task.process_instance_id)
            raise RuntimeError("flaky work")
        self.applied.setdefault(task.job_id, task.process_instance_id)
        return {"job": task.job_id}

    def applied_per_instance(self) -> dict[str, set[str]]:
        per_instance: dict[str, set[str]] = defaultdict(set)
        for job_id, instance_id in self.applied.items():
            per_instance[instance_id].add(job_id)
        return per_instance


class _Unexpected(logging.Handler):
    """Collects "job ... ended with an unexpected error" records (a bug, not an outcome)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "unexpected error" in record.getMessage():
            self.records.append(
                f"{record.getMessage()}: {record.exc_info and record.exc_info[1]!r}"
            )


class WorkerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        backoff_module._shared.seed(0)  # the jitter of retries, for repeatable runs
        self.loop = VirtualTimeLoop()
        self.loop.set_exception_handler(_quiet_about_the_dead)
        self.fake = FakeEngine(max_long_poll=0.2, network_yields=1)
        self.ledger = Ledger(self.fake)
        self.clock = LoopClock(self.loop)
        # Real leases in virtual time: a crashed worker's jobs wait until its lease runs out.
        self.journal = MemoryJournal(
            owner="observer", lease=SETTINGS.journal_lease, clock=self.clock
        )
        self.routers: dict[str, Router] = {}
        for pod, tenant in PODS.items():
            self.routers[pod] = Router()
            work = self.ledger.work_for(pod)
            self.routers[pod].task(TOPIC, reply=MESSAGE, tenant_ids=[tenant])(work)
        self.clients: list[EngineClient] = []
        self.workers: dict[str, Worker] = {}
        self.runners: dict[str, asyncio.Task[None]] = {}
        self.restart: dict[str, str] = dict.fromkeys(PODS, "new id")  # or "same id", "away"
        self.last_id: dict[str, str] = {}
        self.generation = 0
        self.same_id_starts = 0
        self.worker_ids: set[str] = set()
        self.idle_since: dict[tuple[str, str], float] = {}  # (job, live holder) -> since
        self.unexpected = _Unexpected()
        logging.getLogger("camunda_relay").addHandler(self.unexpected)
        self._claim_batch = recovery.CLAIM_BATCH
        recovery.CLAIM_BATCH = CLAIM_BATCH

    # -- plumbing ------------------------------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def _ensure_workers(self, *, everyone: bool = False) -> None:
        """A worker for every pod that is not away (``everyone``: away ones too)."""
        for pod in PODS:
            if pod not in self.workers and (everyone or self.restart[pod] != "away"):
                self._start_worker(pod)

    def _start_worker(self, pod: str) -> Worker:
        if self.restart[pod] == "same id" and pod in self.last_id:
            worker_id = self.last_id[pod]
            self.same_id_starts += 1
        else:
            self.generation += 1
            worker_id = f"{pod}-{self.generation}"
        self.last_id[pod] = worker_id
        self.worker_ids.add(worker_id)
        client = EngineClient(SETTINGS, transport=self.fake.transport())
        self.clients.append(client)
        worker = Worker(
            self.routers[pod],
            SETTINGS,
            client=client,
            journal=_SlowJournal(self.journal.share(owner=worker_id)),
            worker_id=worker_id,
            poll_backoff=POLL_BACKOFF,
            clock=self.clock,
        )
        self.workers[pod] = worker
        self.runners[pod] = self.loop.create_task(worker.run())
        return worker

    async def _ticks(self, count: int) -> None:
        for _ in range(count):
            await asyncio.sleep(0)

    def _open_tasks(self, *, ours: bool) -> list[str]:
        return sorted(
            task.id
            for task in self.fake.tasks.values()
            if not task.done
            and not task.deleted
            and (task.locked_by in self.worker_ids if ours else task.locked_by is not None)
        )

    def _live_instances(self) -> list[str]:
        return sorted(
            i.id for i in self.fake.instances.values() if i.state not in ("completed", "cancelled")
        )

    # -- the engine ----------------------------------------------------------------------------

    @initialize(count=st.integers(1, 4), tenant=st.sampled_from(sorted(PODS.values())))
    def first_instances(self, count: int, tenant: str) -> None:
        self.start_instances(count, tenant)
        self._ensure_workers()

    @precondition(lambda self: len(self.fake.instances) < MAX_INSTANCES)
    @rule(count=st.integers(1, 3), tenant=st.sampled_from(sorted(PODS.values())))
    def start_instances(self, count: int, tenant: str) -> None:
        for _ in range(min(count, MAX_INSTANCES - len(self.fake.instances))):
            self.fake.start(f"bk-{len(self.fake.instances)}", tenant_id=tenant)

    @rule(kinds=st.lists(st.sampled_from(["lose", "503", "404"]), min_size=1, max_size=3))
    def complete_faults(self, kinds: list[str]) -> None:
        """The next completes: the response lost after the commit, or refused (404: as if
        the task were gone, though it is not)."""
        self.fake.inject("complete", *(COMPLETE_FAULTS[kind] for kind in kinds))

    @rule(kinds=st.lists(st.sampled_from(["lose", "503", "500"]), min_size=1, max_size=3))
    def correlate_faults(self, kinds: list[str]) -> None:
        """The next correlations: the response lost after the commit, or unavailable."""
        self.fake.inject("POST /message", *(CORRELATE_FAULTS[kind] for kind in kinds))

    @rule(kind=st.sampled_from(["lose", "503"]))
    def fetch_fault(self, kind: str) -> None:
        """The next fetch: tasks locked but the answer lost, or the engine unavailable."""
        self.fake.inject("POST /external-task/fetchAndLock", FETCH_FAULTS[kind])

    @precondition(lambda self: HISTORY_FAULTS)
    @rule(
        data=st.data(),
        what=st.sampled_from(["passages", "instance", "task log", "runtime", "instances"]),
    )
    def history_fault(self, data: st.DataObject, what: str) -> None:
        """The next history (or runtime instance) query of this kind answers 503."""
        if what == "instance":
            instances = sorted(self.fake.instances)
            if not instances:
                return
            route = f"GET /history/process-instance/{data.draw(st.sampled_from(instances))}"
        else:
            route = {
                "passages": "GET /history/activity-instance",
                "task log": "GET /history/external-task-log/count",
                "runtime": "POST /process-instance",  # the cancellation round's question
                "instances": "POST /history/process-instance",
            }[what]
        self.fake.inject(route, Fault("status", 503))

    @rule(polls=st.integers(0, 3))
    def catch_reached_late(self, polls: int) -> None:
        """Instances completed from now on reach the catch event after ``polls`` messages
        ("too early" answers before)."""
        self.fake.transit_polls = polls

    @rule(data=st.data())
    def lock_expires(self, data: st.DataObject) -> None:
        tasks = self._open_tasks(ours=False)
        if tasks:
            self.fake.expire_lock(data.draw(st.sampled_from(tasks), label="task"))

    @rule(data=st.data())
    def lock_taken_over(self, data: st.DataObject) -> None:
        """Our lock ran out and another worker fetched the task: our complete gets a 400."""
        tasks = self._open_tasks(ours=True)
        if tasks:
            self.fake.steal_lock(data.draw(st.sampled_from(tasks), label="task"))

    @rule(data=st.data())
    def instance_cancelled(self, data: st.DataObject) -> None:
        instances = self._live_instances()
        if instances:
            self.fake.cancel(data.draw(st.sampled_from(instances), label="instance"))

    @rule(data=st.data())
    def work_fails_once(self, data: st.DataObject) -> None:
        instances = self._live_instances()
        if instances:
            self.ledger.flaky.add(data.draw(st.sampled_from(instances), label="instance"))

    # -- the worker ----------------------------------------------------------------------------

    @rule(ticks=st.integers(1, 40))
    def run_a_little(self, ticks: int) -> None:
        """Let the workers run for a few loop iterations (no time passes)."""
        self._ensure_workers()
        self._run(self._ticks(ticks))

    @rule(seconds=st.sampled_from([0.01, 0.1, 0.3, 1.0, 3.0]))
    def time_passes(self, seconds: float) -> None:
        self._ensure_workers()
        self._run(asyncio.sleep(seconds))

    @precondition(lambda self: bool(self.workers))
    @rule(data=st.data(), then=st.sampled_from(["new id", "same id", "away"]))
    def crash(self, data: st.DataObject, then: str) -> None:
        """kill -9: every task of the worker is cancelled where it stands; nothing released.
        ``then``: the pod comes back under a new worker id, under the same one (a
        container restart keeps the pod name), or only after a while (``pod_back``)."""
        pod = data.draw(st.sampled_from(sorted(self.workers)), label="pod")
        worker, runner = self.workers.pop(pod), self.runners.pop(pod)
        self.restart[pod] = then
        doomed = [runner, *worker._ctx.runs.tasks()]
        for task in doomed:
            task.cancel()
        self._run(asyncio.wait(doomed))

    @precondition(lambda self: "away" in self.restart.values())
    @rule(data=st.data(), same_id=st.booleans())
    def pod_back(self, data: st.DataObject, same_id: bool) -> None:
        away = sorted(pod for pod, then in self.restart.items() if then == "away")
        pod = data.draw(st.sampled_from(away), label="pod")
        self.restart[pod] = "same id" if same_id else "new id"
        if pod not in self.workers:
            self._start_worker(pod)

    @precondition(lambda self: bool(self.workers))
    @rule(data=st.data(), grace=st.sampled_from([0.0, 0.3, 1.0]))
    def sigterm(self, data: st.DataObject, grace: float) -> None:
        """A graceful stop with a grace period; unfinished jobs stay in the journal."""
        self._stop(data.draw(st.sampled_from(sorted(self.workers)), label="pod"), grace)

    def _stop(self, pod: str, grace: float) -> None:
        worker, runner = self.workers.pop(pod), self.runners.pop(pod)
        self.restart[pod] = "new id"

        async def stop() -> None:
            worker.stop()
            await runner
            await worker.shutdown(timedelta(seconds=grace))

        self._run(stop())

    # -- invariants ----------------------------------------------------------------------------

    def _jobs(self) -> list[Job]:
        """The journal now, read without running the loop (that would move the worker on
        between reading the journal and reading the engine)."""
        return _at_once(self.journal.all())

    @invariant()
    def catch_passed_at_most_once_and_delivered_means_passed(self) -> None:
        for instance in self.fake.instances.values():
            assert instance.passages <= 1, f"{instance.id} passed its catch event twice"
        for job in self._jobs():
            if job.state is JobState.DELIVERED:
                instance = self.fake.instances[job.task.process_instance_id]
                assert instance.passages == 1, f"job {job.id} delivered, but nothing passed"
                assert instance.variables["job"]["value"] == job.id, "another job's result"

    @invariant()
    def at_most_one_applied_effect_and_no_work_before_completion(self) -> None:
        assert self.ledger.violations == []
        for instance_id, jobs in self.ledger.applied_per_instance().items():
            assert len(jobs) <= 1, f"{instance_id}: effects applied by jobs {sorted(jobs)}"

    @invariant()
    def cancelled_only_when_the_instance_is_gone_and_then_no_message(self) -> None:
        for job in self._jobs():
            instance = self.fake.instances[job.task.process_instance_id]
            if job.state is JobState.CANCELLED:
                assert instance.state == "cancelled", f"job {job.id} cancelled: {job.error}"
                assert job.deliveries == 0, f"job {job.id} cancelled after a delivery"
        for instance in self.fake.instances.values():
            if instance.state == "cancelled":
                assert instance.passages == 0, f"{instance.id} got a message, then cancelled"

    @invariant()
    def no_job_lost_no_false_failure(self) -> None:
        unfinished = {job.id for job in self._jobs() if not job.state.finished}
        for task in self.fake.tasks.values():
            instance = self.fake.instances[task.instance_id]
            if not task.done or instance.state == "cancelled" or instance.passages:
                continue
            assert task.id in unfinished, (
                f"task {task.id} completed, instance {instance.id} waits, and no unfinished "
                "job in the journal will answer it"
            )
        for job in self._jobs():
            if job.state is JobState.FAILED:
                instance = self.fake.instances[job.task.process_instance_id]
                assert instance.state == "cancelled", f"job {job.id} failed: {job.error}"
        assert self.fake.incidents == []
        assert self.unexpected.records == []

    @invariant()
    def no_job_held_idle_by_a_live_worker(self) -> None:
        """A job a live worker holds is run there, or taken up within one claim round."""
        now = self.loop.time()
        live = {worker.worker_id: worker for worker in self.workers.values()}
        idle: dict[tuple[str, str], float] = {}
        for job in self._jobs():
            holder = self.journal.holder(job.id)
            worker = live.get(holder or "")
            if job.state.finished or worker is None:
                continue
            runs = worker._ctx.runs
            if f"job:{job.id}" in runs or f"task:{job.id}" in runs:
                continue
            since = self.idle_since.get((job.id, worker.worker_id), now)
            idle[(job.id, worker.worker_id)] = since
            assert now - since <= HELD_IDLE_LIMIT, (
                f"job {job.id} ({job.state.value}) held by live worker {worker.worker_id}, "
                f"which does not run it, for {now - since:.1f} s"
            )
        self.idle_since = idle

    # -- the end -------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            self._settle()
            self._check_the_end()
        finally:
            self._close()

    def _settle(self) -> None:
        """No more faults, every lock runs out: all instances must now finish."""
        self.fake.clear_faults()
        self.fake.transit_polls = 0
        self.ledger.flaky.clear()
        for task in self.fake.tasks.values():
            if task.locked_by is not None:
                task.lock_expired = True
        self._ensure_workers(everyone=True)
        for _ in range(SETTLE_SECONDS):
            if self._settled():
                break
            self._run(asyncio.sleep(1.0))
        for pod in sorted(self.workers):
            self._stop(pod, grace=1.0)

    def _settled(self) -> bool:
        running = ("task", "transit", "waiting")
        return not any(i.state in running for i in self.fake.instances.values()) and all(
            job.state.finished for job in self._jobs()
        )

    def _check_the_end(self) -> None:
        for route, kind in sorted(set(self.fake.faults_hit)):
            event(f"fault hit: {route} {kind}")
        event(f"workers: {min(self.generation, 4)}{'+' if self.generation > 4 else ''}")
        event(f"restarts under the same id: {min(self.same_id_starts, 3)}")
        applied = self.ledger.applied_per_instance()
        for instance in self.fake.instances.values():
            if instance.state == "cancelled":
                continue
            assert instance.passages == 1, f"{instance.id} never finished ({instance.state})"
            assert len(applied[instance.id]) == 1, f"{instance.id}: effects {applied[instance.id]}"
        self.no_job_lost_no_false_failure()
        self.cancelled_only_when_the_instance_is_gone_and_then_no_message()
        for state in sorted({job.state.value for job in self._jobs()}):
            event(f"job state at the end: {state}")
        unfinished = [job.id for job in self._jobs() if not job.state.finished]
        assert unfinished == [], f"jobs never finished: {unfinished}"

    def _close(self) -> None:
        recovery.CLAIM_BATCH = self._claim_batch
        logging.getLogger("camunda_relay").removeHandler(self.unexpected)
        leftovers = asyncio.all_tasks(self.loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            self._run(asyncio.wait(leftovers))
        for client in self.clients:
            self._run(client.aclose())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


TestWorkerMachine = WorkerMachine.TestCase
TestWorkerMachine.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.timeout(120)
def test_the_virtual_clock_jumps_to_the_next_timer() -> None:
    loop = VirtualTimeLoop()
    try:
        started = loop.time()
        loop.run_until_complete(asyncio.sleep(3600))
        assert loop.time() - started == pytest.approx(3600)
    finally:
        loop.close()


# -- what the machine found (with HISTORY_FAULTS on) -------------------------------------------
# Each test pins a bug the state machine found in the worker or the correlator, since fixed:
# history that cannot be read must never turn a delivered or completed job into a lost one.


def _reply_router() -> Router:
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        return {"job": task.job_id}

    return router


def _run_worker(fake: FakeEngine, journal: MemoryJournal, **kwargs: Any) -> None:
    """One worker, run once to the end (replies delivered), on a virtual clock."""
    loop = VirtualTimeLoop()

    async def scenario() -> None:
        async with EngineClient(SETTINGS, transport=fake.transport()) as client:
            worker = Worker(_reply_router(), SETTINGS, client=client, journal=journal, **kwargs)
            async with worker:
                await worker.run_once()

    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), timeout=3600))
    finally:
        loop.close()


def test_lost_complete_then_history_unavailable_keeps_the_job() -> None:
    fake = FakeEngine()
    instance_id = fake.start("bk")
    fake.inject("complete", Fault("lose"))
    fake.inject("GET /history/external-task-log/count", Fault("status", 503))
    _run_worker(fake, MemoryJournal())
    assert fake.instances[instance_id].passages == 1


def test_resume_while_history_is_unavailable_keeps_a_completed_job() -> None:
    from camunda_relay.failpoints import Failpoints

    fake = FakeEngine()
    instance_id = fake.start("bk")
    journal = MemoryJournal(owner="crashed", lease=EXPIRED_LEASE)
    crash = Failpoints.from_environment(
        {"CAMUNDA_RELAY_FAILPOINTS": "after_complete_before_work=raise"}
    )
    _run_worker(fake, journal, failpoints=crash)  # completed, still "recorded"
    assert fake.tasks["task-2"].done
    fake.inject("GET /history/external-task-log/count", Fault("status", 503))
    _run_worker(fake, journal.share(owner="restarted"))
    assert fake.instances[instance_id].passages == 1


def test_history_unavailable_while_too_early_is_retried() -> None:
    fake = FakeEngine(transit_polls=1)
    instance_id = fake.start("bk")
    fake.inject(f"GET /history/process-instance/{instance_id}", Fault("status", 503))
    _run_worker(fake, MemoryJournal())
    assert fake.instances[instance_id].passages == 1


def test_lost_correlate_then_history_unavailable_is_not_a_failure() -> None:
    fake = FakeEngine()
    instance_id = fake.start("bk")
    fake.inject("POST /message", Fault("lose"))
    fake.inject("GET /history/activity-instance", *[Fault("status", 503)] * 2)
    journal = MemoryJournal()
    _run_worker(fake, journal)
    assert fake.instances[instance_id].passages == 1
    (job,) = _at_once(journal.all())
    assert job.state is JobState.DELIVERED, job.error
