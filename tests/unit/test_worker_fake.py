"""Worker error paths against the in-process fake engine (lost responses, 503s, races).

Whether the worker works with Camunda is tested against the real engine in
tests/engine/test_worker.py; these tests pin what it does when the engine misbehaves in ways
the real one cannot be made to on demand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from camunda_relay import (
    BpmnError,
    EngineClient,
    Job,
    JobState,
    MemoryJournal,
    Reply,
    Router,
    Settings,
    Task,
    Worker,
)
from camunda_relay.backoff import Backoff
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine, Fault

T = TypeVar("T")

SETTINGS = Settings(
    url="http://fake-engine/engine-rest",
    retry_timeout=timedelta(milliseconds=10),
    retries=1,
    shutdown_grace=timedelta(seconds=2),
    journal=":memory:",
)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=60))


def reply_router(work: Any = None) -> Router:
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        if work is not None:
            await work(task)
        return {"result_for": task.business_key}

    return router


def make_worker(fake: FakeEngine, router: Router, **kwargs: Any) -> Worker:
    client = EngineClient(SETTINGS, transport=fake.transport())
    return Worker(router, SETTINGS, client=client, **kwargs)


async def run_once(fake: FakeEngine, router: Router, **kwargs: Any) -> Worker:
    async with make_worker(fake, router, **kwargs) as worker:
        await worker.run_once()
        return worker


def test_reply_completes_then_correlates_to_the_same_instance() -> None:
    fake = FakeEngine()
    ids = [fake.start(f"bk-{n}") for n in range(3)]
    worker = run(run_once(fake, reply_router()))
    for number, instance_id in enumerate(ids):
        instance = fake.instances[instance_id]
        assert instance.state == "completed"
        assert instance.passages == 1
        assert instance.variables["result_for"]["value"] == f"bk-{number}"
    assert worker.stats.replies_delivered == 3
    assert not fake.incidents


def test_too_early_is_retried_until_the_instance_waits() -> None:
    fake = FakeEngine(transit_polls=3)
    instance_id = fake.start("late")
    run(run_once(fake, reply_router()))
    assert fake.instances[instance_id].passages == 1
    assert fake.calls.count("POST /message") == 4
    assert not fake.incidents


def test_lost_correlate_response_is_confirmed_from_history() -> None:
    fake = FakeEngine()
    instance_id = fake.start("lost")
    fake.inject("POST /message", Fault("lose"))
    worker = run(run_once(fake, reply_router()))
    assert fake.instances[instance_id].passages == 1
    assert worker.stats.replies_delivered == 1
    assert not fake.incidents


def test_lost_complete_response_is_confirmed_and_work_runs_once() -> None:
    fake = FakeEngine()
    fake.start("lost-complete")
    fake.inject("complete", Fault("lose"))
    runs: list[str] = []

    async def work(task: Task) -> None:
        runs.append(task.id)

    worker = run(run_once(fake, reply_router(work)))
    assert len(runs) == 1
    assert worker.stats.replies_delivered == 1
    assert fake.calls.count("complete") == 2


FAST = Backoff(base=timedelta(milliseconds=5), cap=timedelta(milliseconds=20))
HISTORY_COUNT = "GET /history/external-task-log/count"


def counted_work() -> tuple[Router, list[str]]:
    runs: list[str] = []

    async def work(task: Task) -> None:
        runs.append(task.id)

    return reply_router(work), runs


def test_a_lost_complete_answer_then_an_outage_is_settled_from_history() -> None:
    """The completion went through, its answer was lost, and every retry meets a 503: the
    job is not dropped (that would leave the instance waiting silently)."""
    fake = FakeEngine()
    instance_id = fake.start("lost-then-outage")
    fake.inject("complete", Fault("lose"), *[Fault("status", 503)] * 7)
    router, runs = counted_work()
    worker = run(run_once(fake, router, poll_backoff=FAST))
    assert fake.calls.count("complete") == 8
    assert len(runs) == 1
    assert fake.instances[instance_id].state == "completed"
    assert worker.stats.replies_delivered == 1
    assert worker.stats.dropped == 0


def test_a_completion_history_cannot_confirm_yet_is_decided_later() -> None:
    fake = FakeEngine()
    instance_id = fake.start("undecided")
    fake.inject("complete", Fault("lose"), *[Fault("status", 503)] * 7)
    fake.inject(HISTORY_COUNT, *[Fault("status", 503)] * 8)
    router, runs = counted_work()
    worker = run(run_once(fake, router, poll_backoff=FAST))
    assert fake.calls.count(HISTORY_COUNT) > 8, "history was asked again until it answered"
    assert len(runs) == 1
    assert fake.instances[instance_id].state == "completed"
    assert worker.stats.replies_delivered == 1
    assert worker.stats.pending_replies == 0


def test_a_completion_that_never_went_through_drops_the_job_without_work() -> None:
    fake = FakeEngine()
    instance_id = fake.start("refused")
    fake.inject("complete", *[Fault("status", 503)] * 8)
    journal = MemoryJournal()
    router, runs = counted_work()
    worker = run(run_once(fake, router, poll_backoff=FAST, journal=journal))
    assert runs == []
    assert worker.stats.dropped == 1
    assert worker.stats.pending_replies == 0
    (job,) = run(journal.jobs())
    assert job.state is JobState.DROPPED
    assert fake.instances[instance_id].state == "task", "offered again when its lock expires"


def test_engine_errors_on_correlate_are_retried() -> None:
    fake = FakeEngine()
    instance_id = fake.start("flaky")
    fake.inject("POST /message", Fault("status", 503), Fault("status", 500))
    run(run_once(fake, reply_router()))
    assert fake.instances[instance_id].passages == 1
    assert not fake.incidents


def test_work_failing_for_good_raises_an_incident_on_the_waiting_execution() -> None:
    fake = FakeEngine()
    instance_id = fake.start("doomed")

    async def work(task: Task) -> None:
        raise RuntimeError("the printer is on fire")

    worker = run(run_once(fake, reply_router(work)))
    (incident,) = fake.incidents
    assert incident["executionId"] == instance_id
    assert incident["incidentType"] == "camundaRelay"
    assert "work failed after 2 attempts" in incident["message"]
    assert "RuntimeError: the printer is on fire" in incident["message"]
    assert worker.stats.replies_failed == 1
    assert fake.instances[instance_id].state == "waiting"


def test_bpmn_error_from_a_reply_topic_becomes_an_incident() -> None:
    fake = FakeEngine()
    fake.start("bpmn")

    async def work(task: Task) -> None:
        raise BpmnError("E1")

    run(run_once(fake, reply_router(work)))
    (incident,) = fake.incidents
    assert "cannot be thrown by a reply topic" in incident["message"]


def test_lock_lost_before_completion_drops_the_job_without_running_it() -> None:
    fake = FakeEngine()
    fake.start("stolen")
    runs: list[str] = []

    async def work(task: Task) -> None:
        runs.append(task.id)

    fake.inject(
        "complete",
        Fault(
            "status",
            400,
            "External Task x cannot be completed by worker 'a'. It is locked by worker 'b'.",
            "BadUserRequestException",
        ),
    )
    journal = MemoryJournal()
    worker = run(run_once(fake, reply_router(work), journal=journal))
    assert runs == []
    assert worker.stats.dropped == 1
    (job,) = run(journal.all())
    assert job.state is JobState.DROPPED


def test_a_known_task_is_not_run_twice() -> None:
    fake = FakeEngine()
    fake.start("twice")
    journal = MemoryJournal()
    runs: list[str] = []

    async def work(task: Task) -> None:
        runs.append(task.id)

    run(run_once(fake, reply_router(work), journal=journal))
    (task,) = fake.tasks.values()
    (instance,) = fake.instances.values()
    # The engine lost the completion and the reply (a database restored from a backup): it
    # offers the same task again.
    task.done, task.locked_by = False, None
    instance.state, instance.passages = "task", 0
    run(run_once(fake, reply_router(work), journal=journal))
    assert len(runs) == 1, "the work is not run again"
    assert fake.calls.count("complete") == 2, "the task is completed again"
    assert instance.state == "completed"
    assert instance.passages == 1, "the stored reply is delivered again"


def test_a_job_waiting_for_its_instance_finishes_when_its_task_is_completed_again() -> None:
    """An H2 engine killed before it wrote its last commits: the worker's job is done and
    retries its reply (the instance is not waiting), and the engine offers the task again."""
    fake = FakeEngine()
    instance_id = fake.start("forgotten")
    (task,) = fake.tasks.values()
    worker_id = "survivor"
    journal = MemoryJournal(owner=worker_id)
    done = Job(
        task=Task(
            id=task.id,
            topic=TOPIC,
            worker_id=worker_id,
            process_instance_id=instance_id,
            process_definition_id="correlation-message:1:def",
            business_key="forgotten",
        ),
        message=MESSAGE,
        state=JobState.DONE,
        attempts=1,
        result={"answer": 7},
        deadline=time.time() + 600,
    )
    run(journal.record(done))
    runs: list[str] = []

    async def work(task: Task) -> None:
        runs.append(task.id)

    run(run_once(fake, reply_router(work), journal=journal, worker_id=worker_id))
    assert runs == []
    assert fake.calls.count("complete") == 1
    assert fake.instances[instance_id].state == "completed"
    assert fake.instances[instance_id].variables["answer"]["value"] == 7
    job = run(journal.get(task.id))
    assert job is not None
    assert job.state is JobState.DELIVERED


def test_a_worker_that_lost_its_lease_leaves_the_job_to_its_heir() -> None:
    """Paused past its lease (a stopped container), the worker wakes up after another one
    claimed the job: it neither overwrites the heir's journal row nor sends the reply."""
    fake = FakeEngine()
    instance_id = fake.start("paused")
    journal = MemoryJournal(owner="paused", lease=timedelta(milliseconds=50))
    heir = journal.share(owner="heir", lease=timedelta(minutes=10))
    work_started, resume_work = asyncio.Event(), asyncio.Event()

    async def work(task: Task) -> None:
        work_started.set()
        await resume_work.wait()

    async def scenario() -> Worker:
        async with make_worker(fake, reply_router(work), journal=journal) as worker:
            running = asyncio.create_task(worker.run_once())
            await work_started.wait()
            await heir.renew()  # the heir is alive
            while not await heir.claim(topics=[TOPIC]):  # the paused worker's lease runs out
                await asyncio.sleep(0.01)
            resume_work.set()
            await running
            return worker

    worker = run(scenario())
    (job,) = run(heir.unfinished())
    assert job.state is JobState.ACKNOWLEDGED, "the heir's row is as the heir claimed it"
    assert worker.stats.taken_over == 1
    assert worker.stats.replies_delivered == 0
    assert "POST /message" not in fake.calls
    assert fake.instances[instance_id].state != "completed", "the reply is the heir's to send"


def test_plain_handler_failure_reports_decreasing_retries_then_incident() -> None:
    fake = FakeEngine()
    fake.start("plain")
    router = Router()

    @router.task(TOPIC, retries=2)
    def handle(task: Task) -> None:
        raise ValueError("bad data")

    async def three_rounds() -> None:
        async with make_worker(fake, router) as worker:
            for _ in range(3):
                await worker.run_once()

    run(three_rounds())
    assert [failure["retries"] for failure in fake.failures] == [2, 1, 0]
    assert fake.failures[0]["errorMessage"] == "ValueError: bad data"
    assert "Traceback" in fake.failures[0]["errorDetails"]
    assert fake.incidents[-1]["incidentType"] == "failedExternalTask"


def test_shutdown_mid_work_reports_no_failure_and_keeps_the_job() -> None:
    fake = FakeEngine()
    fake.start("long")
    started = asyncio.Event()

    async def work(task: Task) -> None:
        started.set()
        await asyncio.sleep(3600)

    journal = MemoryJournal()

    async def scenario() -> Worker:
        worker = make_worker(fake, reply_router(work), journal=journal)
        runner = asyncio.ensure_future(worker.run())
        await asyncio.wait_for(started.wait(), 10)
        worker.stop()
        await runner
        await worker.shutdown(grace=timedelta(milliseconds=100))
        return worker

    run(scenario())
    assert fake.failures == []
    assert fake.incidents == []
    (job,) = run(journal.all())
    assert job.state is JobState.ACKNOWLEDGED


def test_poll_loop_survives_engine_errors() -> None:
    fake = FakeEngine()
    instance_id = fake.start("survivor")
    fake.inject("POST /external-task/fetchAndLock", *[Fault("status", 503)] * 3)
    fast = Backoff(base=timedelta(milliseconds=5), cap=timedelta(milliseconds=20))

    async def scenario() -> Worker:
        worker = make_worker(fake, reply_router(), poll_backoff=fast)
        runner = asyncio.ensure_future(worker.run())
        while fake.instances[instance_id].state != "completed":
            await asyncio.sleep(0.01)
        worker.stop()
        await runner
        await worker.shutdown()
        return worker

    worker = run(scenario())
    assert worker.stats.engine_errors == 3
    assert worker.stats.replies_delivered == 1


@pytest.mark.parametrize("bad", [object(), {1, 2}])
def test_a_result_that_cannot_be_sent_becomes_an_incident_naming_it(bad: object) -> None:
    fake = FakeEngine()
    fake.start("unsendable")
    router = Router()

    @router.task(TOPIC, reply=Reply(MESSAGE), retries=0)
    async def handle(task: Task) -> dict[str, object]:
        return {"payload": bad}

    run(run_once(fake, router))
    (incident,) = fake.incidents
    assert "'payload'" in incident["message"]


def test_metrics_expose_the_worker_figures() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from camunda_relay.metrics import register

    fake = FakeEngine()
    fake.start("metered")
    worker = run(run_once(fake, reply_router()))
    registry = CollectorRegistry()
    register(worker, registry)
    text = generate_latest(registry).decode()
    label = f'worker_id="{worker.worker_id}"'
    assert f"camunda_relay_replies_delivered_total{{{label}}} 1.0" in text
    assert f"camunda_relay_tasks_fetched_total{{{label}}} 1.0" in text
    assert f"camunda_relay_replies_pending{{{label}}} 0.0" in text
    assert f"camunda_relay_jobs_taken_over_total{{{label}}} 0.0" in text


def test_delivery_deadline_counts_from_the_end_of_work_then_incident() -> None:
    fake = FakeEngine(transit_polls=10_000)  # the instance never reaches the catch event
    instance_id = fake.start("never-waits")
    router = Router()

    @router.task(TOPIC, reply=Reply(MESSAGE, deadline=timedelta(milliseconds=300)))
    async def handle(task: Task) -> dict[str, object]:
        await asyncio.sleep(0.5)  # longer than the deadline: it must not count
        return {}

    worker = run(run_once(fake, router))
    assert fake.calls.count("POST /message") >= 2, "delivery was tried after the work"
    (incident,) = fake.incidents
    assert incident["executionId"] == instance_id
    assert "not delivered before its deadline" in incident["message"]
    assert "too early" in incident["message"]
    assert worker.stats.replies_failed == 1


def test_a_taken_over_job_whose_completion_history_cannot_tell_is_asked_again() -> None:
    """S8B in miniature: a worker died right after complete; its heir claims the recorded
    job while the engine is down, so history cannot say whether the completion went
    through. The heir now holds (and renews) the job; a later round must still decide it."""
    fake = FakeEngine()
    instance_id = fake.start("heir")
    (task,) = fake.tasks.values()
    fake.complete_elsewhere(instance_id)  # the dead worker's completion went through
    crashed = MemoryJournal(owner="crashed", lease=timedelta(seconds=-1))
    recorded = Job(
        task=Task(
            id=task.id,
            topic=TOPIC,
            worker_id="crashed",
            process_instance_id=instance_id,
            process_definition_id="correlation-message:1:def",
            business_key="heir",
        ),
        message=MESSAGE,
    )
    run(crashed.record(recorded))
    heir_journal = crashed.share(owner="heir", lease=timedelta(minutes=10))
    fake.inject(HISTORY_COUNT, *[Fault("status", 503)] * 5)  # the engine is down
    router, runs = counted_work()

    async def scenario() -> tuple[int, int]:
        async with make_worker(
            fake, router, journal=heir_journal, poll_backoff=FAST, worker_id="heir"
        ) as worker:
            first = await worker.resume()  # claims it; history cannot tell yet
            second = await worker.resume()  # it runs here already: not started twice
            await worker.drain()  # its runner asks history again until it can tell
            return first, second

    assert run(scenario()) == (1, 0)
    assert len(runs) == 1
    assert fake.instances[instance_id].state == "completed"


def test_an_engine_without_json_is_named_at_start_and_a_dict_result_fails_saying_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeEngine(json_variables=False)
    fake.start("no-json")
    router = Router()

    @router.task(TOPIC, retries=0)
    def handle(task: Task) -> dict[str, object]:
        return {"order": {"id": 7}, "count": 3}

    with caplog.at_level("WARNING", logger="camunda_relay"):
        worker = run(run_once(fake, router))
    assert fake.json_probes == 1
    assert worker.client.json_variables is False
    (warning,) = [r for r in caplog.records if "Json" in r.getMessage()]
    assert warning.levelname == "WARNING"
    assert "stores no Json variables" in warning.getMessage()
    assert "\n" not in warning.getMessage()
    (failure,) = fake.failures
    assert failure["errorMessage"].startswith("VariableError: variable 'order': a dict is sent")
    assert "stores no Json variables" in failure["errorMessage"]
    assert "Spin JSON data format" in failure["errorMessage"]
    assert fake.incidents[-1]["incidentType"] == "failedExternalTask"
    assert not [c for c in fake.calls if c.endswith("/complete")], "nothing sent that would 400"


def test_an_engine_with_json_is_probed_once_and_says_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeEngine()
    instance_id = fake.start("json")
    with caplog.at_level("WARNING", logger="camunda_relay"):
        worker = run(run_once(fake, reply_router()))
    assert fake.json_probes == 1
    assert worker.client.json_variables is True
    assert not [r for r in caplog.records if "Json" in r.getMessage()]
    assert fake.instances[instance_id].state == "completed"
