"""The semantics users need where they grow: several pods, long outages, loops, bad
completions. Each test pins one promise against the in-process fake engine; time is moved by
a :class:`~camunda_relay.clock.ManualClock` where a deadline or a retry wait is at stake.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from camunda_relay import (
    EngineClient,
    Job,
    JobState,
    MemoryJournal,
    Reply,
    RetryLater,
    Router,
    Settings,
    Task,
    Worker,
)
from camunda_relay.backoff import Backoff
from camunda_relay.clock import ManualClock
from camunda_relay.errors import JournalUnavailable
from camunda_relay.failpoints import FailpointError, Failpoints
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine, Fault

T = TypeVar("T")

SETTINGS = Settings(
    url="http://fake-engine/engine-rest",
    retry_timeout=timedelta(milliseconds=10),
    retries=1,
    shutdown_grace=timedelta(seconds=2),
    journal=":memory:",
    long_poll=timedelta(milliseconds=20),
    journal_lease=timedelta(milliseconds=600),  # renew and claim every 0.2 s
)
FAST = Backoff(base=timedelta(milliseconds=1), cap=timedelta(milliseconds=10))
SLOW = Backoff(base=timedelta(milliseconds=500), cap=timedelta(milliseconds=500))
DEFINITION = "correlation-message:1:def"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=60))


async def until(condition: Callable[[], object], *, timeout: float = 20.0) -> None:
    """Wait for ``condition`` with a deadline (real time: the worker runs meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        await asyncio.sleep(0.005)


async def drive(clock: ManualClock, work: asyncio.Future[T]) -> T:
    """Run ``work`` to its end, moving the manual clock to the next sleeper whenever the
    loop has had a moment to settle (virtual time: a 12 s outage takes no wall time)."""
    while not work.done():
        await asyncio.sleep(0.001)
        due = clock.next_wakeup()
        if due is not None:
            clock.advance(max(due - clock.monotonic(), 0.0))
    return work.result()


def make_worker(fake: FakeEngine, router: Router, **kwargs: Any) -> Worker:
    kwargs.setdefault("poll_backoff", FAST)
    client = EngineClient(SETTINGS, transport=fake.transport())
    return Worker(router, SETTINGS, client=client, **kwargs)


def reply_router(topic: str = TOPIC, reply: Reply | str = MESSAGE, **options: Any) -> Router:
    router = Router()

    @router.task(topic, reply=reply, **options)
    async def handle(task: Task) -> dict[str, object]:
        return {"done_by": topic}

    return router


def counting_router(runs: list[str], topic: str = TOPIC) -> Router:
    router = Router()

    @router.task(topic, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        runs.append(task.job_id)
        return {}

    return router


def job_for(fake: FakeEngine, instance_id: str, **changes: Any) -> Job:
    """The journal job a worker would have written for the instance's open task."""
    (task_id,) = [t.id for t in fake.tasks.values() if t.instance_id == instance_id]
    fake_task = fake.tasks[task_id]
    task = Task(
        id=task_id,
        topic=fake_task.topic,
        worker_id="someone",
        process_instance_id=instance_id,
        activity_instance_id=f"send_message:{task_id}",
        process_definition_id=DEFINITION,
    )
    return Job(task=task, message=MESSAGE, **changes)


# -- several pods, one journal ---------------------------------------------------------------


def test_pods_with_different_routers_finish_their_own_and_a_dead_pods_jobs_wait_for_it() -> None:
    fake = FakeEngine()
    journal = MemoryJournal(owner="observer")
    a_instance = fake.start("a", topic="a")
    b_instance = fake.start("b", topic="b")
    fake.complete_elsewhere(b_instance)  # pod B completed its task, then died (kill -9)
    dead_b = journal.share(owner="pod-b")
    run(dead_b.record(job_for(fake, b_instance, state=JobState.ACKNOWLEDGED, attempts=1)))
    (b_job,) = run(journal.unfinished())

    async def pod_a() -> None:
        async with make_worker(
            fake, reply_router("a"), journal=journal.share(owner="pod-a"), worker_id="pod-a"
        ) as worker:
            await worker.run_once()
            assert await worker.resume() == 0, "pod A serves no topic 'b'"

    run(pod_a())
    assert fake.instances[a_instance].state == "completed"
    assert journal.holder(b_job.id) == "pod-b", "pod A neither claims nor holds b's job"
    assert fake.instances[b_instance].state == "waiting"

    async def pod_b_again() -> None:
        async with make_worker(
            fake, reply_router("b"), journal=journal.share(owner="pod-b2"), worker_id="pod-b2"
        ) as worker:
            await worker.run_once()

    run(pod_b_again())
    assert fake.instances[b_instance].state == "completed"
    assert fake.instances[b_instance].variables["done_by"]["value"] == "b"
    assert not fake.incidents


def test_a_job_has_one_runner_however_often_it_is_resumed() -> None:
    """Two claim rounds at once (a restart's and the periodic one) start one runner, even
    while history decides whether the recorded task was completed."""
    fake = FakeEngine()
    instance_id = fake.start("once")
    fake.complete_elsewhere(instance_id)
    journal = MemoryJournal(owner="worker")
    run(journal.record(job_for(fake, instance_id)))
    runs: list[str] = []

    async def scenario() -> tuple[int, int]:
        async with make_worker(
            fake, counting_router(runs), journal=journal, worker_id="worker"
        ) as worker:
            first, second = await asyncio.gather(worker.resume(), worker.resume())
            await worker.drain()
            return first, second

    assert sorted(run(scenario())) == [0, 1]
    assert len(runs) == 1
    assert fake.instances[instance_id].passages == 1


# -- the deadline --------------------------------------------------------------------------


def test_an_engine_outage_longer_than_the_deadline_does_not_fail_the_reply() -> None:
    fake = FakeEngine()
    instance_id = fake.start("outage")
    fake.inject("POST /message", *[Fault("status", 503)] * 30)  # ~7 s of virtual outage
    clock = ManualClock()
    router = reply_router(reply=Reply(MESSAGE, deadline=timedelta(seconds=1)))

    async def scenario() -> Worker:
        async with make_worker(fake, router, clock=clock, poll_backoff=SLOW) as worker:
            await drive(clock, asyncio.ensure_future(worker.run_once()))
            return worker

    worker = run(scenario())
    assert fake.calls.count("POST /message") == 31
    assert fake.instances[instance_id].state == "completed"
    assert worker.stats.replies_delivered == 1
    assert not fake.incidents


def test_a_job_resumed_after_a_stop_longer_than_its_deadline_is_tried_before_it_can_fail() -> None:
    fake = FakeEngine()
    instance_id = fake.start("late-restart")
    fake.complete_elsewhere(instance_id)
    journal = MemoryJournal(owner="crashed")
    past = time.time() - 3600  # the worker was away for an hour, far past the deadline
    job = job_for(fake, instance_id, state=JobState.DONE, result={}, attempts=1, deadline=past)
    run(journal.record(job))

    async def scenario() -> None:
        async with make_worker(
            fake, reply_router(), journal=journal.share(owner="back"), worker_id="back"
        ) as worker:
            await worker.resume()
            await worker.drain()

    run(scenario())
    assert fake.instances[instance_id].state == "completed"
    assert not fake.incidents


def test_too_early_past_the_deadline_still_ends_in_an_incident() -> None:
    fake = FakeEngine(transit_polls=10_000)  # the instance never reaches the catch event
    instance_id = fake.start("never")
    clock = ManualClock()
    router = reply_router(reply=Reply(MESSAGE, deadline=timedelta(seconds=5)))

    async def scenario() -> None:
        async with make_worker(fake, router, clock=clock) as worker:
            await drive(clock, asyncio.ensure_future(worker.run_once()))

    run(scenario())
    (incident,) = fake.incidents
    assert incident["executionId"] == instance_id
    assert "deadline" in incident["message"]


# -- incidents -----------------------------------------------------------------------------


def test_an_incident_that_cannot_be_created_is_retried_and_the_job_is_failing_meanwhile() -> None:
    fake = FakeEngine()
    instance_id = fake.start("no-incident-yet")
    fake.inject("create-incident", *[Fault("status", 503)] * 10_000)
    router = Router()

    @router.task(TOPIC, reply=MESSAGE, retries=0)
    async def fail(task: Task) -> None:
        raise RuntimeError("for good")

    journal = MemoryJournal(owner="w")

    async def scenario() -> None:
        async with make_worker(fake, router, journal=journal, worker_id="w") as worker:
            running = asyncio.ensure_future(worker.run_once())
            await until(lambda: fake.calls.count("create-incident") >= 3)
            (job,) = await journal.jobs()
            assert job.state is JobState.FAILING
            assert not job.state.finished
            fake.clear_faults()  # the engine is back
            await running

    run(scenario())
    (job,) = run(journal.jobs())
    assert job.state is JobState.FAILED
    assert [i["executionId"] for i in fake.incidents] == [instance_id]


def test_a_stop_while_the_incident_is_retried_leaves_the_job_failing_for_the_next_start() -> None:
    fake = FakeEngine()
    instance_id = fake.start("failing")
    fake.inject("create-incident", *[Fault("status", 503)] * 10_000)
    router = Router()

    @router.task(TOPIC, reply=MESSAGE, retries=0)
    async def fail(task: Task) -> None:
        raise RuntimeError("for good")

    journal = MemoryJournal(owner="w")

    async def first_start() -> None:
        async with make_worker(fake, router, journal=journal, worker_id="w") as worker:
            running = asyncio.ensure_future(worker.run_once())
            await until(lambda: fake.calls.count("create-incident") >= 2)
            worker.stop()
            await running

    run(first_start())
    (job,) = run(journal.jobs())
    assert job.state is JobState.FAILING
    fake.clear_faults()

    async def second_start() -> None:
        async with make_worker(
            fake, router, journal=journal.share(owner="w2"), worker_id="w2"
        ) as worker:
            await worker.run_once()

    run(second_start())
    assert [i["executionId"] for i in fake.incidents] == [instance_id]
    assert run(journal.jobs())[0].state is JobState.FAILED


# -- rounds --------------------------------------------------------------------------------


def test_already_delivered_is_judged_for_the_jobs_own_round() -> None:
    """A model that loops back to the catch event behind an async continuation: round 2's
    reply is too early at first while round 1's passage is in history; it must be sent."""
    fake = FakeEngine(transit_polls=2)
    instance_id = fake.start("loop", rounds=3)

    async def scenario() -> None:
        async with make_worker(fake, reply_router()) as worker:
            for _ in range(3):
                assert await worker.run_once() == 1

    run(scenario())
    assert fake.instances[instance_id].passages == 3
    assert fake.instances[instance_id].state == "completed"
    assert not fake.incidents


# -- what handlers raise -------------------------------------------------------------------


@pytest.mark.parametrize("option", ["complete_variables", "complete_local_variables"])
def test_complete_variables_that_raise_are_a_reported_failure_and_the_work_never_runs(
    option: str,
) -> None:
    fake = FakeEngine()
    instance_id = fake.start("bad-completion")
    runs: list[str] = []
    router = Router()

    def broken(task: Task) -> dict[str, object]:
        raise KeyError("order_id")

    @router.task(TOPIC, reply=Reply(MESSAGE, **{option: broken}))
    async def handle(task: Task) -> dict[str, object]:
        runs.append(task.id)
        return {}

    journal = MemoryJournal(owner="w")

    async def scenario() -> None:
        async with make_worker(fake, router, journal=journal, worker_id="w") as worker:
            await worker.run_once()  # first fetch: retries from the policy (1)
            await worker.run_once()  # offered again: 0 left, the engine raises an incident

    run(scenario())
    assert [f["retries"] for f in fake.failures] == [1, 0]
    assert "KeyError" in fake.failures[0]["errorMessage"]
    assert [i["incidentType"] for i in fake.incidents] == ["failedExternalTask"]
    assert fake.instances[instance_id].state == "task"
    assert runs == []
    (job,) = run(journal.jobs())
    assert job.state is JobState.DROPPED


def test_retry_later_in_a_reply_handler_sets_the_retries_left() -> None:
    fake = FakeEngine()
    instance_id = fake.start("give-up")
    runs: list[str] = []
    router = Router()

    @router.task(TOPIC, reply=MESSAGE, retries=5)
    async def handle(task: Task) -> dict[str, object]:
        runs.append(task.id)
        raise RetryLater("the partner said no", retries=0)

    run(_run_once(fake, router))
    assert len(runs) == 1, "retries=0: no second attempt"
    (incident,) = fake.incidents
    assert incident["executionId"] == instance_id
    assert "the partner said no" in incident["message"]


def test_retry_later_waits_its_time_and_a_stop_ends_the_wait_at_once() -> None:
    fake = FakeEngine()
    fake.start("later")
    runs: list[str] = []
    router = Router()

    @router.task(TOPIC, reply=MESSAGE, retries=5)
    async def handle(task: Task) -> dict[str, object]:
        runs.append(task.id)
        raise RetryLater("not yet", after=timedelta(hours=1))

    journal = MemoryJournal(owner="w")

    async def scenario() -> float:
        async with make_worker(fake, router, journal=journal, worker_id="w") as worker:
            running = asyncio.ensure_future(worker.run_once())
            await until(lambda: len(runs) == 1)
            stopped = time.monotonic()
            worker.stop()
            await running
            return time.monotonic() - stopped

    assert run(scenario()) < 30, "the hour-long wait answered the stop"
    assert len(runs) == 1
    (job,) = run(journal.jobs())
    assert job.state is JobState.ACKNOWLEDGED, "the job waits in the journal for the next start"


async def _run_once(fake: FakeEngine, router: Router, **kwargs: Any) -> Worker:
    async with make_worker(fake, router, **kwargs) as worker:
        await worker.run_once()
        return worker


# -- the journal and the lease -------------------------------------------------------------


def test_lease_renewal_is_not_delayed_by_history_that_does_not_answer() -> None:
    fake = FakeEngine()
    instance_id = fake.start("slow-history")
    fake.complete_elsewhere(instance_id)
    journal = MemoryJournal(owner="dead")
    run(journal.record(job_for(fake, instance_id)))  # recorded: history must decide
    fake.inject("GET /history/external-task-log/count", Fault("hang"))
    mine = journal.share(owner="live")

    async def scenario() -> None:
        async with make_worker(fake, reply_router(), journal=mine, worker_id="live") as worker:
            running = asyncio.ensure_future(worker.run())
            await until(lambda: "GET /history/external-task-log/count" in fake.calls)
            first = mine.lease_until("live")
            await until(lambda: mine.lease_until("live") > first + 0.3)
            worker.stop()
            await running

    run(scenario())


class _FlakyJournal(MemoryJournal):
    """A journal whose database is gone while ``down`` is set."""

    down = False
    renewals = 0

    async def record(self, job: Job) -> bool:
        if self.down:
            raise JournalUnavailable("the journal database does not answer")
        return await super().record(job)

    async def renew(self) -> None:
        type(self).renewals += 1
        if self.down:
            raise JournalUnavailable("the journal database does not answer")
        await super().renew()


def test_a_journal_that_cannot_record_stops_fetching_reply_tasks_until_it_answers() -> None:
    fake = FakeEngine()
    journal = _FlakyJournal(owner="w", lease=timedelta(milliseconds=600))

    async def scenario() -> str:
        async with make_worker(fake, reply_router(), journal=journal, worker_id="w") as worker:
            running = asyncio.ensure_future(worker.run())
            await until(lambda: "POST /external-task/fetchAndLock" in fake.calls)
            _FlakyJournal.down = True  # the database goes away
            instance_id = fake.start("journal-down")
            (task_id,) = fake.tasks
            await until(lambda: f"POST /external-task/{task_id}/unlock" in fake.calls)
            fetches = fake.calls.count("POST /external-task/fetchAndLock")
            renewals = _FlakyJournal.renewals
            await until(lambda: _FlakyJournal.renewals >= renewals + 2)
            assert fake.calls.count("POST /external-task/fetchAndLock") == fetches
            _FlakyJournal.down = False  # back
            await until(lambda: fake.instances[instance_id].state == "completed")
            worker.stop()
            await running
            return instance_id

    instance_id = run(scenario())
    assert fake.tasks[next(iter(fake.tasks))].instance_id == instance_id
    assert not fake.incidents


# -- history -------------------------------------------------------------------------------


def test_an_engine_without_full_history_is_reported_and_a_recorded_job_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeEngine(history_level="audit")
    instance_id = fake.start("audit")
    fake.complete_elsewhere(instance_id)
    journal = MemoryJournal(owner="dead")
    run(journal.record(job_for(fake, instance_id)))  # was the task completed? history can't say

    async def scenario() -> Worker:
        async with make_worker(
            fake, reply_router(), journal=journal.share(owner="w"), worker_id="w"
        ) as worker:
            await worker.resume()
            await worker.drain()
            return worker

    with caplog.at_level(logging.ERROR, logger="camunda_relay"):
        worker = run(scenario())
    assert worker.history_full is False
    assert any("history level" in record.getMessage() for record in caplog.records)
    assert fake.instances[instance_id].state == "completed"


class _OnceFailpoints(Failpoints):
    """Raises at ``name`` the first time only (a bug that strikes once)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name
        self.hits = 0

    async def hit(self, name: str) -> None:
        if name == self._name and self.hits == 0:
            self.hits += 1
            raise FailpointError(f"failpoint {name}")


def test_a_job_left_by_an_unexpected_error_is_given_back_and_taken_up_again() -> None:
    """An error nobody planned for (here: right after the job was recorded) must not leave
    the job held and idle: it goes back to the journal and the next claim round runs it."""
    fake = FakeEngine()
    instance_id = fake.start("bug")
    journal = MemoryJournal(owner="w", lease=SETTINGS.journal_lease)
    failpoints = _OnceFailpoints("after_record")

    router = reply_router(lock_duration=timedelta(seconds=1))  # the task comes back soon

    async def scenario() -> None:
        async with make_worker(
            fake, router, journal=journal, worker_id="w", failpoints=failpoints
        ) as worker:
            running = asyncio.ensure_future(worker.run())
            await until(lambda: fake.instances[instance_id].state == "completed")
            worker.stop()
            await running

    run(scenario())
    assert failpoints.hits == 1
    (job,) = run(journal.jobs())
    assert job.state is JobState.DELIVERED, "dropped (not completed), then afresh when offered"
    assert not fake.incidents
