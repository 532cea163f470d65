"""Work that stops when its instance does, against the real engine: instances deleted over the
REST API (as Cockpit does) or moved on by an interrupting boundary event while their reply
work runs, or while a deferred reply waits; plain tasks whose instance goes away."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from camunda_relay import (
    DeferReply,
    EngineClient,
    JobState,
    ReplyTokenError,
    Router,
    Task,
    Worker,
    send_reply,
)
from tests.engine.test_worker import eventually, run, settings_for, with_worker
from tests.support.engine import WORKER_USER, Engine

MODEL = (Path(__file__).parents[1] / "support" / "models" / "cancel.bpmn").read_text()
KEY, TOPIC, MESSAGE, MOVE_ON = (
    "relay-cancel",
    "relay-cancel",
    "relay_cancel_reply",
    "relay_cancel_move_on",
)
INTERVAL = timedelta(seconds=1)
# The documented bound: one interval, plus the round's queries (each within the request
# timeout). A wait's deadline, never an assertion on a measured time.
BOUND = INTERVAL.total_seconds() + 3 * 30


def variant(name: str) -> str:
    """The model under another process key and topic (one handler per topic)."""
    return MODEL.replace('id="relay-cancel"', f'id="{name}"').replace(
        'camunda:topic="relay-cancel"', f'camunda:topic="{name}"'
    )


@pytest.fixture(scope="module")
def deployed(engine: Engine) -> None:
    async def deploy() -> None:
        async with EngineClient(settings_for(engine)) as client:
            files = {
                "cancel.bpmn": MODEL.encode(),
                "cancel-sync.bpmn": variant("relay-cancel-sync").encode(),
                "cancel-deferred.bpmn": variant("relay-cancel-deferred").encode(),
                "cancel-rights.bpmn": variant("relay-cancel-rights").encode(),
                "cancel-plain.bpmn": PLAIN_MODEL.encode(),
            }
            await client.deploy("cancellation-tests", files)

    run(deploy())


PLAIN_MODEL = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="plain-cancel-defs" targetNamespace="t">
  <bpmn:process id="relay-cancel-plain" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="relay-cancel-plain" />
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>
"""


async def start(worker: Worker, key: str, count: int) -> list[str]:
    return [str((await worker.client.start_process(key))["id"]) for _ in range(count)]


async def delete(rest: httpx.Client, instance_id: str) -> None:
    response = await asyncio.to_thread(rest.delete, f"/process-instance/{instance_id}")
    assert response.status_code == 204, response.text


async def move_on(rest: httpx.Client, instance_id: str) -> None:
    body = {"messageName": MOVE_ON, "processInstanceId": instance_id}
    response = await asyncio.to_thread(rest.post, "/message", json=body)
    assert response.status_code == 204, response.text


def history(rest: httpx.Client, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    response = rest.post("/history/process-instance", json={"processInstanceIds": list(ids)})
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()}


def wait_passages(rest: httpx.Client, instance_id: str) -> list[dict[str, Any]]:
    response = rest.get(
        "/history/activity-instance",
        params={"processInstanceId": instance_id, "activityId": "wait"},
    )
    assert response.status_code == 200, response.text
    passages: list[dict[str, Any]] = response.json()
    return passages


def incidents(rest: httpx.Client, ids: Sequence[str]) -> list[dict[str, Any]]:
    found = rest.get("/incident").json()
    return [incident for incident in found if incident["processInstanceId"] in ids]


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def test_20_instances_10_deleted_and_2_moved_on_while_their_work_runs(
    engine: Engine, rest: httpx.Client, deployed: None
) -> None:
    started: dict[str, float] = {}
    seen: dict[str, float] = {}
    gone_at: dict[str, float] = {}
    router = Router()
    release = asyncio.Event()

    @router.task(TOPIC, reply=MESSAGE)
    async def work(task: Task) -> dict[str, object]:
        started[task.process_instance_id] = time.monotonic()
        try:
            await release.wait()
        except asyncio.CancelledError:
            seen[task.process_instance_id] = time.monotonic()
            raise
        return {"worked_for": task.process_instance_id}

    async def scenario(worker: Worker) -> tuple[list[str], dict[str, JobState]]:
        ids = await start(worker, KEY, 20)
        await eventually(
            lambda: asyncio.sleep(0, len(started) == 20), timeout=120, what="20 handlers run"
        )
        deleted, moved = ids[:10], ids[10:12]
        for instance_id in deleted:
            gone_at[instance_id] = time.monotonic()
            await delete(rest, instance_id)
        for instance_id in moved:
            gone_at[instance_id] = time.monotonic()
            await move_on(rest, instance_id)
        await eventually(
            lambda: asyncio.sleep(0, set(seen) == set(deleted + moved)),
            timeout=BOUND,
            what="the 12 handlers cancelled",
        )
        release.set()
        await eventually(
            lambda: asyncio.sleep(0, worker.stats.replies_delivered == 8),
            timeout=120,
            what="8 replies delivered",
        )
        states = {job.task.process_instance_id: job.state for job in await worker.journal.jobs()}
        assert worker.stats.replies_cancelled == 12
        return ids, states

    settings = settings_for(engine, cancel_check_interval=INTERVAL, max_in_flight=32)
    ids, states = run(with_worker(router, settings, scenario))
    deleted, moved, kept = ids[:10], ids[10:12], ids[12:]
    assert set(seen) == set(deleted + moved)  # no handler of a waiting instance was cancelled
    assert {states[i] for i in deleted + moved} == {JobState.CANCELLED}
    assert {states[i] for i in kept} == {JobState.DELIVERED}
    found = history(rest, ids)
    assert {found[i]["state"] for i in deleted} == {"EXTERNALLY_TERMINATED"}
    assert {found[i]["state"] for i in moved} == {"ACTIVE"}  # at the user task after the move
    assert {found[i]["state"] for i in kept} == {"COMPLETED"}
    for instance_id in moved:  # the boundary event took it: our message never arrived
        (passage,) = wait_passages(rest, instance_id)
        assert passage["canceled"] is True
    for instance_id in kept:
        (passage,) = wait_passages(rest, instance_id)
        assert passage["canceled"] is False
        assert passage["endTime"] is not None
    assert incidents(rest, ids) == []
    latencies = [seen[i] - gone_at[i] for i in deleted + moved]
    print(  # the figure the README quotes (pytest -s)
        f"cancel detection latency with a {INTERVAL.total_seconds():g} s interval: "
        f"p50 {statistics.median(latencies):.2f} s, p95 {percentile(latencies, 0.95):.2f} s, "
        f"max {max(latencies):.2f} s"
    )


def test_a_sync_handler_sees_task_cancelled_and_the_others_run_on(
    engine: Engine, rest: httpx.Client, deployed: None
) -> None:
    key = "relay-cancel-sync"
    noticed: dict[str, str | None] = {}
    release = threading.Event()
    router = Router()

    @router.task(key, reply=MESSAGE)
    def work(task: Task) -> dict[str, object]:
        while not release.is_set():
            if task.cancelled.wait(0.05):
                noticed[task.process_instance_id] = task.cancelled.reason
                return {}
        return {"done": True}

    async def scenario(worker: Worker) -> list[str]:
        ids = await start(worker, key, 2)
        await eventually(
            lambda: asyncio.sleep(0, worker.stats.pending_replies == 2), timeout=60, what="runs"
        )
        await delete(rest, ids[0])
        await eventually(lambda: asyncio.sleep(0, ids[0] in noticed), timeout=BOUND, what="seen")
        release.set()
        await eventually(
            lambda: asyncio.sleep(0, worker.stats.replies_delivered == 1), timeout=60, what="end"
        )
        assert worker.stats.replies_cancelled == 1
        return ids

    ids = run(with_worker(router, settings_for(engine, cancel_check_interval=INTERVAL), scenario))
    assert noticed == {ids[0]: "the process instance was cancelled"}
    assert history(rest, ids)[ids[1]]["state"] == "COMPLETED"


def test_a_deferred_reply_of_a_deleted_instance_is_cancelled_and_its_token_says_so(
    engine: Engine, rest: httpx.Client, deployed: None
) -> None:
    key = "relay-cancel-deferred"
    tokens: dict[str, str] = {}
    router = Router()

    @router.task(key, reply=MESSAGE)
    async def hand_out(task: Task) -> dict[str, object]:
        assert task.reply_token is not None
        tokens[task.process_instance_id] = task.reply_token
        raise DeferReply

    async def scenario(worker: Worker) -> None:
        (instance_id,) = await start(worker, key, 1)
        await eventually(
            lambda: asyncio.sleep(0, worker.stats.replies_deferred == 1), timeout=60, what="parked"
        )
        await delete(rest, instance_id)
        await eventually(
            lambda: asyncio.sleep(0, worker.stats.replies_cancelled == 1),
            timeout=BOUND,
            what="the deferred job cancelled",
        )
        (job,) = await worker.journal.jobs()
        assert job.state is JobState.CANCELLED
        with pytest.raises(ReplyTokenError, match="the process instance was cancelled") as refused:
            await send_reply(worker.journal, tokens[instance_id], {"late": True})
        assert refused.value.verdict == "cancelled"

    run(with_worker(router, settings_for(engine, cancel_check_interval=INTERVAL), scenario))


def test_a_plain_handler_is_cancelled_when_extend_lock_finds_its_task_gone(
    engine: Engine, rest: httpx.Client, deployed: None
) -> None:
    key = "relay-cancel-plain"
    seen: list[str] = []
    router = Router()
    gate = asyncio.Event()

    @router.task(key, lock_duration=timedelta(seconds=2))
    async def work(task: Task) -> dict[str, object]:
        gate.set()
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            seen.append(task.process_instance_id)
            raise
        return {}

    async def scenario(worker: Worker) -> str:
        (instance_id,) = await start(worker, key, 1)
        await eventually(lambda: asyncio.sleep(0, gate.is_set()), timeout=60, what="runs")
        await delete(rest, instance_id)
        await eventually(lambda: asyncio.sleep(0, bool(seen)), timeout=60, what="cancelled")
        await eventually(
            lambda: asyncio.sleep(0, worker.stats.tasks_cancelled == 1), timeout=30, what="counted"
        )
        assert worker.stats.failures_reported == 0
        return instance_id

    instance_id = run(with_worker(router, settings_for(engine), scenario))
    assert seen == [instance_id]
    assert incidents(rest, [instance_id]) == []


LOOP_MODEL = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="loop-cancel-defs" targetNamespace="t">
  <bpmn:message id="reply_msg" name="relay_cancel_reply" />
  <bpmn:process id="relay-cancel-loop" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="relay-cancel-loop" />
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="wait" />
    <bpmn:intermediateCatchEvent id="wait" camunda:asyncBefore="true">
      <bpmn:messageEventDefinition id="wait_def" messageRef="reply_msg" />
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="wait" targetRef="again" />
    <bpmn:exclusiveGateway id="again" />
    <bpmn:sequenceFlow id="back" sourceRef="again" targetRef="work">
      <bpmn:conditionExpression>${again}</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="out" sourceRef="again" targetRef="end">
      <bpmn:conditionExpression>${!again}</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>
"""


def test_an_async_continuation_before_the_catch_event_and_a_loop_back_are_never_a_cancel(
    engine: Engine, rest: httpx.Client
) -> None:
    """The instance waits in the catch event's async continuation (its job held suspended)
    while round 1's work runs; round 2's work runs while history holds round 1's ended
    passage of the catch event and the instance waits in the continuation again."""
    key = "relay-cancel-loop"
    releases = [asyncio.Event(), asyncio.Event()]
    running: list[str] = []
    router = Router()

    @router.task(key, reply=MESSAGE)
    async def work(task: Task) -> dict[str, object]:
        number = len(running)
        running.append(task.id)
        await releases[number].wait()
        return {"again": number == 0}

    def suspend(suspended: bool) -> None:
        (definition,) = rest.get("/job-definition", params={"processDefinitionKey": key}).json()
        body = {"suspended": suspended, "includeJobs": True}
        response = rest.put(f"/job-definition/{definition['id']}/suspended", json=body)
        assert response.status_code == 204, response.text

    def subscribed(instance_id: str) -> bool:
        # Not POST /process-instance with activityIdIn: it lists an instance in the catch
        # event's async continuation already (a transition instance of that activity).
        params = {"processInstanceId": instance_id, "messageEventSubscriptionName": MESSAGE}
        return bool(rest.get("/execution", params=params).json())

    def in_continuation(instance_id: str) -> bool:
        jobs = rest.get("/job", params={"processInstanceId": instance_id}).json()
        return len(jobs) == 1 and jobs[0]["suspended"] is True

    async def scenario(worker: Worker) -> str:
        await worker.client.deploy("cancellation-loop", {"loop.bpmn": LOOP_MODEL.encode()})
        await asyncio.to_thread(suspend, True)
        (instance_id,) = await start(worker, key, 1)
        for round_number in (1, 2):
            await eventually(
                lambda n=round_number: asyncio.sleep(0, len(running) == n),
                timeout=60,
                what=f"round {round_number}",
            )
            await eventually(
                lambda: asyncio.to_thread(in_continuation, instance_id),
                timeout=60,
                what="the instance in the async continuation",
            )
            for _ in range(3):
                assert await worker.check_cancelled() == 0
            await asyncio.to_thread(suspend, False)
            await eventually(
                lambda: asyncio.to_thread(subscribed, instance_id),
                timeout=60,
                what="the instance at the catch event",
            )
            assert await worker.check_cancelled() == 0
            await asyncio.to_thread(suspend, True)  # round 2's continuation is held too
            releases[round_number - 1].set()
        await eventually(
            lambda: asyncio.sleep(0, worker.stats.replies_delivered == 2), timeout=60, what="2"
        )
        assert worker.stats.replies_cancelled == 0
        return instance_id

    settings = settings_for(engine, cancel_check_interval=timedelta(0))
    instance_id = run(with_worker(router, settings, scenario))
    assert history(rest, [instance_id])[instance_id]["state"] == "COMPLETED"
    passages = [p for p in wait_passages(rest, instance_id) if p["endTime"] is not None]
    assert [p["canceled"] for p in passages] == [False, False]


def test_the_least_privilege_worker_user_can_run_the_cancellation_round(
    engine: Engine, rest: httpx.Client, deployed: None
) -> None:
    """The round's queries (runtime instances, their history) need no right the worker
    group lacks: with one missing, the engine would list nothing and nothing would ever be
    cancelled."""
    key = "relay-cancel-rights"
    handler_cancelled: list[str] = []
    running = asyncio.Event()
    router = Router()

    @router.task(key, reply=MESSAGE)
    async def work(task: Task) -> dict[str, object]:
        running.set()
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            handler_cancelled.append(task.process_instance_id)
            raise
        return {}

    async def scenario(worker: Worker) -> str:
        (instance_id,) = await start_as_admin(rest, key)
        await eventually(lambda: asyncio.sleep(0, running.is_set()), timeout=60, what="runs")
        assert await worker.check_cancelled() == 0
        await delete(rest, instance_id)
        assert await worker.check_cancelled() == 1
        await eventually(
            lambda: asyncio.sleep(0, worker.stats.replies_cancelled == 1), timeout=30, what="end"
        )
        return instance_id

    settings = settings_for(
        engine,
        user=WORKER_USER,
        password=engine.worker_password,
        cancel_check_interval=timedelta(0),
    )
    instance_id = run(with_worker(router, settings, scenario))
    assert handler_cancelled == [instance_id]


async def start_as_admin(rest: httpx.Client, key: str) -> list[str]:
    response = await asyncio.to_thread(rest.post, f"/process-definition/key/{key}/start", json={})
    assert response.status_code == 200, response.text
    return [str(response.json()["id"])]
