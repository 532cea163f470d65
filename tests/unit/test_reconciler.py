"""The reconciler against the in-process fake engine: which waiting executions are orphans,
and what a sweep does about them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry

from camunda_relay import EngineClient, Job, JobState, MemoryJournal, Router, Settings, Task
from camunda_relay.errors import BadRequest
from camunda_relay.failpoints import Failpoints
from camunda_relay.replies import reconciler as reconciler_module
from camunda_relay.replies.reconciler import Orphan, Reconciler, find_orphans
from camunda_relay.worker import Worker
from tests.support.fake_engine import CATCH, MESSAGE, TOPIC, FakeEngine, FakeTask, Fault

T = TypeVar("T")

SETTINGS = Settings(url="http://fake-engine/engine-rest", journal=":memory:")
OLD = timedelta(minutes=30)
MIN_AGE = timedelta(minutes=5)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


def client(fake: FakeEngine) -> EngineClient:
    return EngineClient(SETTINGS, transport=fake.transport())


async def orphans_of(
    fake: FakeEngine, journal: MemoryJournal, min_age: timedelta = MIN_AGE
) -> list[Orphan]:
    async with client(fake) as engine:
        return await find_orphans(engine, journal, [MESSAGE], min_age=min_age)


def waiting_instance(fake: FakeEngine, business_key: str, age: timedelta = OLD) -> str:
    instance_id = fake.start(business_key)
    fake.complete_elsewhere(instance_id, waiting_for=age)
    return instance_id


def job_for(fake: FakeEngine, instance_id: str, state: JobState) -> Job:
    (task,) = [t for t in fake.tasks.values() if t.instance_id == instance_id]
    return Job(
        task=Task(id=task.id, topic=TOPIC, worker_id="w", process_instance_id=instance_id),
        message=MESSAGE,
        state=state,
    )


def test_a_waiting_instance_no_journal_knows_is_an_orphan() -> None:
    fake = FakeEngine()
    instance_id = waiting_instance(fake, "lost-1")
    fake.start("still-at-the-task")  # not waiting for the message: not an orphan

    (orphan,) = run(orphans_of(fake, MemoryJournal()))

    assert orphan.process_instance_id == instance_id
    assert orphan.execution_id == instance_id  # the fake's executions are their instances
    assert orphan.business_key == "lost-1"
    assert orphan.message == MESSAGE
    assert orphan.activity_id == CATCH
    since = fake.instances[instance_id].waiting_since
    assert since is not None
    assert orphan.waiting_since is not None
    assert abs(orphan.waiting_since - since) < timedelta(milliseconds=1)  # the engine's precision


@pytest.mark.parametrize("state", [JobState.RECORDED, JobState.ACKNOWLEDGED, JobState.DONE])
def test_an_unfinished_job_makes_the_instance_known(state: JobState) -> None:
    fake = FakeEngine()
    instance_id = waiting_instance(fake, "pending")
    journal = MemoryJournal()
    run(journal.record(job_for(fake, instance_id, state)))
    assert run(orphans_of(fake, journal)) == []


@pytest.mark.parametrize("state", [JobState.DELIVERED, JobState.FAILED])
def test_a_delivered_or_failed_job_makes_the_instance_known(state: JobState) -> None:
    fake = FakeEngine()
    instance_id = waiting_instance(fake, "answered")
    journal = MemoryJournal()
    run(journal.record(job_for(fake, instance_id, state)))
    assert run(orphans_of(fake, journal)) == []


def test_only_the_latest_round_counts_in_a_model_that_loops() -> None:
    """The instance came back to the catch event: the first round's reply was delivered,
    the second round's job is missing from the journal."""
    fake = FakeEngine()
    instance_id = waiting_instance(fake, "looping")
    journal = MemoryJournal()
    run(journal.record(job_for(fake, instance_id, JobState.DELIVERED)))
    second = FakeTask(id="task-second-round", instance_id=instance_id)
    second.done, second.completed_by = True, "unseen-worker"
    fake.tasks[second.id] = second
    (orphan,) = run(orphans_of(fake, journal))
    assert orphan.process_instance_id == instance_id


def test_a_dropped_job_does_not_make_the_instance_known() -> None:
    fake = FakeEngine()
    instance_id = waiting_instance(fake, "dropped")
    journal = MemoryJournal()
    run(journal.record(job_for(fake, instance_id, JobState.DROPPED)))
    (orphan,) = run(orphans_of(fake, journal))
    assert orphan.process_instance_id == instance_id


def test_young_subscriptions_are_left_alone() -> None:
    fake = FakeEngine()
    waiting_instance(fake, "young", age=timedelta(seconds=10))
    old = waiting_instance(fake, "old", age=OLD)
    assert [o.process_instance_id for o in run(orphans_of(fake, MemoryJournal()))] == [old]
    assert len(run(orphans_of(fake, MemoryJournal(), min_age=timedelta(0)))) == 2


def test_instances_with_a_relay_incident_are_not_orphans_again() -> None:
    fake = FakeEngine()
    instance_id = waiting_instance(fake, "flagged")
    fake.incidents.append({"executionId": instance_id, "incidentType": "camundaRelay"})
    fake.incidents.append({"executionId": instance_id, "incidentType": "failedJob"})
    assert run(orphans_of(fake, MemoryJournal())) == []


def test_orphans_come_oldest_first_across_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciler_module, "PAGE_SIZE", 2)
    fake = FakeEngine()
    ids = [waiting_instance(fake, f"bk-{n}", age=OLD - timedelta(minutes=n)) for n in range(5)]
    found = run(orphans_of(fake, MemoryJournal()))
    assert [o.process_instance_id for o in found] == ids
    assert fake.calls.count("GET /event-subscription") == 3


def test_pages_shrink_to_the_engines_max_results_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciler_module, "PAGE_SIZE", 4)
    fake = FakeEngine()
    ids = [waiting_instance(fake, f"bk-{n}", age=OLD - timedelta(minutes=n)) for n in range(5)]
    limit = "Max results limit of 2 exceeded!"
    fake.inject("GET /event-subscription", Fault("status", 400, limit, "BadUserRequestException"))
    found = run(orphans_of(fake, MemoryJournal()))
    assert [o.process_instance_id for o in found] == ids
    assert fake.calls.count("GET /event-subscription") == 4  # refused, then 2 + 2 + 1


def test_a_bad_request_that_names_no_limit_ends_the_sweep() -> None:
    fake = FakeEngine()
    waiting_instance(fake, "x")
    fake.inject("GET /event-subscription", Fault("status", 400, "no", "BadUserRequestException"))
    with pytest.raises(BadRequest):
        run(orphans_of(fake, MemoryJournal()))


def test_no_messages_asks_nothing() -> None:
    fake = FakeEngine()
    waiting_instance(fake, "x")

    async def scenario() -> list[Orphan]:
        async with client(fake) as engine:
            return await find_orphans(engine, MemoryJournal(), [], min_age=MIN_AGE)

    assert run(scenario()) == []
    assert fake.calls == []


# -- the sweep --------------------------------------------------------------------------------


async def sweeps(fake: FakeEngine, count: int, **options: Any) -> tuple[Reconciler, list[int]]:
    async with client(fake) as engine:
        reconciler = Reconciler(engine, MemoryJournal(), [MESSAGE], min_age=MIN_AGE, **options)
        found = [len(await reconciler.sweep()) for _ in range(count)]
        return reconciler, found


def metric(reconciler: Reconciler, name: str) -> float | None:
    return reconciler.registry.get_sample_value(name)


def test_report_logs_each_orphan_once_with_ids_only_and_counts_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeEngine()
    instance_id = waiting_instance(fake, "canary-business-key")
    with caplog.at_level(logging.ERROR, logger="camunda_relay.replies.reconciler"):
        reconciler, found = run(sweeps(fake, 2))
    assert found == [1, 1]
    assert fake.incidents == []
    (record,) = caplog.records
    assert instance_id in record.getMessage()
    assert MESSAGE in record.getMessage()
    assert "canary" not in caplog.text
    assert metric(reconciler, "camunda_relay_orphans") == 1
    assert metric(reconciler, "camunda_relay_orphans_found_total") == 1
    assert metric(reconciler, "camunda_relay_orphan_incidents_total") == 0


def test_incident_action_raises_one_incident_per_orphan() -> None:
    fake = FakeEngine()
    instance_id = waiting_instance(fake, "lost")
    reconciler, found = run(sweeps(fake, 3, action="incident"))
    assert found == [1, 0, 0]  # the incident makes it visible: later sweeps leave it alone
    (incident,) = fake.incidents
    assert incident["executionId"] == instance_id
    assert incident["incidentType"] == "camundaRelay"
    assert incident["message"].startswith(
        "no worker journal knows the reply owed to this instance: "
    )
    assert f"--process-instance {instance_id}" in incident["message"]
    assert metric(reconciler, "camunda_relay_orphan_incidents_total") == 1
    assert metric(reconciler, "camunda_relay_orphans") == 0


def test_incident_that_cannot_be_created_is_tried_again_next_sweep() -> None:
    fake = FakeEngine()
    waiting_instance(fake, "retry")
    fake.inject("create-incident", Fault("status", 503))
    reconciler, found = run(sweeps(fake, 2, action="incident"))
    assert found == [1, 1]
    assert len(fake.incidents) == 1
    assert metric(reconciler, "camunda_relay_orphans_found_total") == 1


def test_an_unreachable_engine_is_counted_not_raised() -> None:
    fake = FakeEngine()
    waiting_instance(fake, "later")
    fake.inject("GET /event-subscription", Fault("status", 503))
    reconciler, found = run(sweeps(fake, 2))
    assert found == [0, 1]
    assert metric(reconciler, "camunda_relay_reconcile_errors_total") == 1


def test_metrics_go_to_the_given_registry_only() -> None:
    registry = CollectorRegistry()
    fake = FakeEngine()
    waiting_instance(fake, "metrics")
    reconciler, _ = run(sweeps(fake, 1, registry=registry))
    assert reconciler.registry is registry
    assert registry.get_sample_value("camunda_relay_orphans") == 1
    # A second reconciler gets a registry of its own: no "duplicated timeseries" error.
    other, _ = run(sweeps(fake, 1))
    assert other.registry is not registry


def test_unknown_action_is_refused() -> None:
    async def scenario() -> None:
        async with client(FakeEngine()) as engine:
            Reconciler(engine, MemoryJournal(), [MESSAGE], action="retry")  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="action must be one of report, incident, resume"):
        run(scenario())


def test_a_lost_journal_after_completion_is_found_by_the_next_sweep() -> None:
    """S2 variant B in miniature: the worker stops after completing the task, before it
    saved the next state; its journal is then lost. The reconciler sees the waiting
    instance; with the worker's own journal it would not."""
    fake = FakeEngine()
    instance_id = fake.start("crashed")
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        return {}

    crashed_journal = MemoryJournal(owner="crashed")
    failpoints = Failpoints.from_environment(
        {"CAMUNDA_RELAY_FAILPOINTS": "after_complete_before_work=raise"}
    )

    async def scenario() -> tuple[list[Orphan], list[Orphan]]:
        async with client(fake) as engine:
            worker = Worker(
                router, SETTINGS, client=engine, journal=crashed_journal, failpoints=failpoints
            )
            await worker.run_once()
            known = await find_orphans(engine, crashed_journal, [MESSAGE], min_age=timedelta(0))
            lost = await find_orphans(engine, MemoryJournal(), [MESSAGE], min_age=timedelta(0))
            return known, lost

    known, lost = run(scenario())
    assert fake.instances[instance_id].state == "waiting"
    assert known == []
    assert [orphan.process_instance_id for orphan in lost] == [instance_id]


def resuming_worker(fake: FakeEngine, journal: MemoryJournal, seen: list[Task]) -> Worker:
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        seen.append(task)
        return {"answer": 42}

    settings = Settings(
        url=SETTINGS.url, journal=":memory:", reconcile="resume", reconcile_min_age=timedelta(0)
    )
    return Worker(router, settings, client=client(fake), journal=journal)


def test_resume_rebuilds_the_lost_job_runs_it_and_delivers_the_reply() -> None:
    fake = FakeEngine()
    instance_id = waiting_instance(fake, "lost-volume")
    fake.instances[instance_id].variables["order"] = {
        "value": "A-17",
        "type": "String",
        "valueInfo": {},
    }
    (task_id,) = [t.id for t in fake.tasks.values() if t.instance_id == instance_id]
    journal = MemoryJournal(owner="fresh")
    seen: list[Task] = []

    async def scenario() -> tuple[list[Orphan], list[Orphan]]:
        async with resuming_worker(fake, journal, seen) as worker:
            assert worker.reconciler is not None
            first = await worker.reconciler.sweep()
            await worker.drain()
            return first, await worker.reconciler.sweep()

    first, second = run(scenario())
    assert [orphan.process_instance_id for orphan in first] == [instance_id]
    assert second == []
    (task,) = seen
    assert task.job_id == task_id, "the idempotency key is the lost job's"
    assert task.business_key == "lost-volume"
    assert dict(task.variables) == {"order": "A-17"}
    instance = fake.instances[instance_id]
    assert instance.state == "completed"
    assert instance.passages == 1
    assert instance.variables["answer"]["value"] == 42
    job = run(journal.get(task_id))
    assert job is not None
    assert job.state is JobState.DELIVERED
    assert job.attempts == 1
    assert fake.incidents == []


def test_an_orphan_that_cannot_be_rebuilt_gets_the_incident() -> None:
    """The history shows no completed task of the worker's reply topic (a message sent by
    someone else's task, or history below level full)."""
    fake = FakeEngine()
    instance_id = waiting_instance(fake, "other-topic")
    for task in fake.tasks.values():
        task.topic = "someone-elses-topic"
    seen: list[Task] = []

    async def scenario() -> None:
        async with resuming_worker(fake, MemoryJournal(), seen) as worker:
            assert worker.reconciler is not None
            await worker.reconciler.sweep()
            await worker.drain()

    run(scenario())
    assert seen == []
    assert [incident["executionId"] for incident in fake.incidents] == [instance_id]
    assert fake.instances[instance_id].state == "waiting"


def test_resume_needs_a_worker() -> None:
    async def scenario() -> None:
        async with client(FakeEngine()) as engine:
            Reconciler(engine, MemoryJournal(), [MESSAGE], action="resume")

    with pytest.raises(ValueError, match="the resume action needs a worker"):
        run(scenario())
