"""EngineClient against the real bundled engine: every call, and the errors Camunda really sends.

The tests deploy a process of their own (own topic, own message), so their fetches never lock
the tasks of other tests sharing the session's engine, and use fresh business keys.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest

from camunda_relay import errors
from camunda_relay.client import EngineClient, TopicRequest
from camunda_relay.settings import Settings
from camunda_relay.task import Task
from camunda_relay.variables import decode_all
from tests.support.engine import FLAVOUR, PASSWORD, USER, Engine

T = TypeVar("T")

PROCESS_KEY = "client-test"
TOPIC = "clientTest"
MESSAGE = "client_test_reply"
CATCH_EVENT = "wait_for_reply"
WORKER = "client-test-worker"
LOCK = timedelta(seconds=60)

MODEL = f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
                  id="client-test-definitions" targetNamespace="http://camunda-relay/tests">
  <bpmn:message id="reply_message" name="{MESSAGE}" />
  <bpmn:error id="handled_error" errorCode="HANDLED" />
  <bpmn:process id="{PROCESS_KEY}" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="start"><bpmn:outgoing>to_work</bpmn:outgoing></bpmn:startEvent>
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{TOPIC}">
      <bpmn:incoming>to_work</bpmn:incoming><bpmn:outgoing>to_wait</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:boundaryEvent id="work_failed" attachedToRef="work">
      <bpmn:outgoing>to_failed</bpmn:outgoing>
      <bpmn:errorEventDefinition errorRef="handled_error" />
    </bpmn:boundaryEvent>
    <bpmn:intermediateCatchEvent id="{CATCH_EVENT}">
      <bpmn:incoming>to_wait</bpmn:incoming><bpmn:outgoing>to_done</bpmn:outgoing>
      <bpmn:messageEventDefinition messageRef="reply_message" />
    </bpmn:intermediateCatchEvent>
    <bpmn:endEvent id="done"><bpmn:incoming>to_done</bpmn:incoming></bpmn:endEvent>
    <bpmn:endEvent id="failed"><bpmn:incoming>to_failed</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="to_work" sourceRef="start" targetRef="work" />
    <bpmn:sequenceFlow id="to_wait" sourceRef="work" targetRef="{CATCH_EVENT}" />
    <bpmn:sequenceFlow id="to_done" sourceRef="{CATCH_EVENT}" targetRef="done" />
    <bpmn:sequenceFlow id="to_failed" sourceRef="work_failed" targetRef="failed" />
  </bpmn:process>
</bpmn:definitions>
"""


def tiny_model(key: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
                  id="tiny" targetNamespace="http://camunda-relay/tests">
  <bpmn:process id="{key}" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="s" /><bpmn:sequenceFlow id="f" sourceRef="s" targetRef="e" />
    <bpmn:endEvent id="e" />
  </bpmn:process>
</bpmn:definitions>
""".encode()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=120))


def new_key(prefix: str = "client") -> str:
    return f"{prefix}-{uuid.uuid4()}"


@pytest.fixture(scope="module")
def settings(engine: Engine) -> Settings:
    return Settings(url=engine.rest_url, user=USER, password=PASSWORD)


@pytest.fixture(scope="module")
def model(settings: Settings) -> str:
    async def deploy() -> None:
        async with EngineClient(settings) as client:
            await client.deploy("client-test", {"client-test.bpmn": MODEL.encode()})

    run(deploy())
    return PROCESS_KEY


def scenario(settings: Settings, body: Callable[[EngineClient], Coroutine[Any, Any, T]]) -> T:
    async def go() -> T:
        async with EngineClient(settings) as client:
            return await body(client)

    return run(go())


async def start(client: EngineClient, business_key: str, **variables: object) -> str:
    started = await client.start_process(
        PROCESS_KEY, business_key=business_key, variables=variables
    )
    assert started["businessKey"] == business_key
    return str(started["id"])


async def fetch(
    client: EngineClient,
    instance_ids: Iterable[str],
    *,
    worker: str = WORKER,
    variables: list[str] | None = None,
) -> dict[str, Task]:
    """Lock the tasks of these instances (only ours: the topic belongs to this module)."""
    wanted = set(instance_ids)
    found: dict[str, Task] = {}
    topics = [TopicRequest(TOPIC, LOCK, variables=variables)]
    deadline = time.monotonic() + 30
    while wanted - set(found):
        assert time.monotonic() < deadline, f"tasks of {wanted - set(found)} never fetched"
        tasks = await client.fetch_and_lock(
            worker, topics, max_tasks=50, long_poll=timedelta(seconds=1)
        )
        found.update({t.process_instance_id: t for t in tasks if t.process_instance_id in wanted})
    return found


async def waiting(client: EngineClient, instance_id: str) -> list[dict[str, Any]]:
    return await client.executions(process_instance_id=instance_id, message_name=MESSAGE)


async def start_and_wait(client: EngineClient, business_key: str) -> str:
    """Start an instance, complete its task: it now waits for the reply message."""
    instance_id = await start(client, business_key)
    task = (await fetch(client, [instance_id]))[instance_id]
    await client.complete(task.id, WORKER)
    assert len(await waiting(client, instance_id)) == 1
    return instance_id


def test_ready_and_access(settings: Settings) -> None:
    async def body(client: EngineClient) -> None:
        assert await client.ready() is True
        await client.check_access()

    scenario(settings, body)


SENT: dict[str, object] = {
    "text": "Grüße, 世界",
    "long_text": "x" * 5000,
    "empty": "",
    "flag": True,
    "small": -(2**31),
    "large": 2**40,
    "ratio": 0.1,
    "nothing": None,
    "object": {"items": [1, 2.5, None, "a"], "nested": {"ok": False}},
    "list": ["a", {"b": 1}],
    "moment": datetime(2026, 11, 27, 21, 0, 0, 123000, tzinfo=UTC),
    "day": date(2026, 2, 28),
    "blob": b"\x00\x01\xfe\xff",
}
RECEIVED: dict[str, object] = SENT | {"day": datetime(2026, 2, 28, tzinfo=UTC)}
CAMUNDA_TYPES = {
    "text": "String",
    "long_text": "Json",
    "empty": "String",
    "flag": "Boolean",
    "small": "Integer",
    "large": "Long",
    "ratio": "Double",
    "nothing": "Null",
    "object": "Json",
    "list": "Json",
    "moment": "Date",
    "day": "Date",
    "blob": "Bytes",
}


def test_start_fetch_complete_with_every_type(
    settings: Settings, model: str, rest: httpx.Client
) -> None:
    """Every type; on an engine without Json (Operaton here) every type but Json."""
    business_key = new_key()
    kept = {n for n, kind in CAMUNDA_TYPES.items() if FLAVOUR.json_variables or kind != "Json"}
    sent = {name: value for name, value in SENT.items() if name in kept}
    received = {name: value for name, value in RECEIVED.items() if name in kept}

    async def body(client: EngineClient) -> str:
        instance_id = await start(client, business_key, **sent)
        task = (await fetch(client, [instance_id]))[instance_id]
        assert task.topic == TOPIC
        assert task.worker_id == WORKER
        assert task.business_key == business_key
        assert task.process_definition_key == PROCESS_KEY
        assert task.activity_id == "work"
        assert task.retries is None
        assert task.lock_expiration is not None
        assert task.lock_expiration > datetime.now(UTC)
        assert dict(task.variables) == received
        await client.complete(
            task.id,
            WORKER,
            {f"out_{name}": value for name, value in sent.items()},
            local_variables={"scratch": 1},
        )
        assert len(await waiting(client, instance_id)) == 1
        return instance_id

    instance_id = scenario(settings, body)
    response = rest.get(
        f"/process-instance/{instance_id}/variables", params={"deserializeValues": "false"}
    )
    assert response.status_code == 200, response.text
    stored = response.json()
    assert {name: stored[f"out_{name}"]["type"] for name in sent} == {
        n: CAMUNDA_TYPES[n] for n in sent
    }
    decoded = decode_all(stored)
    assert {name: decoded[f"out_{name}"] for name in sent} == received
    assert "scratch" not in stored  # local to the task's scope, gone with it


def test_fetch_only_the_named_variables(settings: Settings, model: str) -> None:
    async def body(client: EngineClient) -> None:
        instance_id = await start(client, new_key(), wanted=1, unwanted=2)
        task = (await fetch(client, [instance_id], variables=["wanted"]))[instance_id]
        assert dict(task.variables) == {"wanted": 1}
        await client.complete(task.id, WORKER)

    scenario(settings, body)


@pytest.mark.json
def test_correlate_to_an_instance_with_variables_finishes_it(
    settings: Settings, model: str, rest: httpx.Client
) -> None:
    business_key = new_key()

    async def body(client: EngineClient) -> str:
        instance_id = await start_and_wait(client, business_key)
        running = await client.historic_process_instances(business_key=business_key, finished=False)
        assert [i["id"] for i in running] == [instance_id]
        await client.correlate(
            MESSAGE, process_instance_id=instance_id, variables={"reply": {"ok": True}}
        )
        finished = await client.historic_process_instance(instance_id)
        assert finished is not None
        assert finished["state"] == "COMPLETED"
        passages = await client.historic_activity_instances(
            process_instance_id=instance_id, activity_id=CATCH_EVENT
        )
        assert len(passages) == 1
        assert passages[0]["endTime"] is not None
        assert await waiting(client, instance_id) == []
        done = await client.historic_process_instances(
            process_definition_key=PROCESS_KEY, business_key=business_key, finished=True
        )
        assert [i["id"] for i in done] == [instance_id]
        assert (
            await client.historic_process_instances(business_key=business_key, finished=False) == []
        )
        return instance_id

    instance_id = scenario(settings, body)
    reply = rest.get(
        "/history/variable-instance",
        params={
            "processInstanceId": instance_id,
            "variableName": "reply",
            "deserializeValues": "false",
        },
    ).json()
    assert [(v["type"], v["value"]) for v in reply] == [("Json", '{"ok":true}')]


def test_correlate_when_nobody_waits(settings: Settings, model: str) -> None:
    async def body(client: EngineClient) -> None:
        with pytest.raises(errors.NoMatchingExecution) as nobody:
            await client.correlate(MESSAGE, business_key=new_key("nobody"))
        # Too early: the instance is still at its external task.
        instance_id = await start(client, new_key())
        with pytest.raises(errors.NoMatchingExecution) as early:
            await client.correlate(MESSAGE, process_instance_id=instance_id)
        for caught in (nobody, early):
            assert caught.value.status == 400
            assert caught.value.request == "POST /message"
            assert "No process definition or execution matches the parameters" in str(caught.value)
        task = (await fetch(client, [instance_id]))[instance_id]
        await client.complete(task.id, WORKER)
        await client.correlate(MESSAGE, process_instance_id=instance_id)

    scenario(settings, body)


def test_same_business_key_three_times_is_ambiguous(settings: Settings, model: str) -> None:
    business_key = new_key("shared")

    async def body(client: EngineClient) -> None:
        instance_ids = [await start(client, business_key) for _ in range(3)]
        tasks = await fetch(client, instance_ids)
        for task in tasks.values():
            await client.complete(task.id, WORKER)
        matching = await client.executions(business_key=business_key, message_name=MESSAGE)
        assert len(matching) == 3
        with pytest.raises(errors.AmbiguousCorrelation) as caught:
            await client.correlate(MESSAGE, business_key=business_key)
        assert caught.value.status == 400
        assert "3 executions match" in str(caught.value)
        # By instance id each one is reached exactly.
        for instance_id in instance_ids:
            await client.correlate(
                MESSAGE, process_instance_id=instance_id, business_key=business_key
            )
        assert await client.executions(business_key=business_key, message_name=MESSAGE) == []

    scenario(settings, body)


def test_calls_by_another_worker_are_refused_as_not_locked(settings: Settings, model: str) -> None:
    async def body(client: EngineClient) -> None:
        instance_id = await start(client, new_key())
        task = (await fetch(client, [instance_id]))[instance_id]
        attempts: list[Coroutine[Any, Any, None]] = [
            client.complete(task.id, "intruder", {"x": 1}),
            client.extend_lock(task.id, "intruder", LOCK),
            client.handle_failure(
                task.id,
                "intruder",
                error_message="x",
                error_details=None,
                retries=1,
                retry_timeout=timedelta(0),
            ),
            client.handle_bpmn_error(task.id, "intruder", error_code="HANDLED"),
        ]
        for attempt in attempts:
            with pytest.raises(errors.TaskNotLocked, match=f"locked by worker '{WORKER}'") as c:
                await attempt
            assert c.value.status == 400
            assert "intruder" in str(c.value)
        assert await client.external_task_completed(task.id) is False
        await client.complete(task.id, WORKER)

    scenario(settings, body)


def test_completing_a_task_nobody_locked_is_not_locked(
    settings: Settings, model: str, rest: httpx.Client
) -> None:
    instance_id = scenario(settings, lambda client: start(client, new_key()))
    listed = rest.get("/external-task", params={"processInstanceId": instance_id}).json()
    (task_id,) = [t["id"] for t in listed]

    async def body(client: EngineClient) -> None:
        with pytest.raises(errors.TaskNotLocked, match="locked by worker 'null'"):
            await client.complete(task_id, WORKER)

    scenario(settings, body)


def test_completing_twice_is_not_found(settings: Settings, model: str) -> None:
    async def body(client: EngineClient) -> None:
        instance_id = await start(client, new_key())
        task = (await fetch(client, [instance_id]))[instance_id]
        before = await client.external_task(task.id)
        assert before is not None
        assert before["workerId"] == WORKER
        await client.complete(task.id, WORKER)
        with pytest.raises(errors.NotFound) as caught:
            await client.complete(task.id, WORKER)
        assert caught.value.status == 404
        assert "does not exist" in str(caught.value)
        assert await client.external_task(task.id) is None
        # The history log tells "completed" (our earlier call went through) from "cancelled".
        assert await client.external_task_completed(task.id) is True
        assert await client.external_task_completed(task.id, WORKER) is True
        assert await client.external_task_completed(task.id, "intruder") is False

    scenario(settings, body)


def test_extend_lock_moves_the_expiry(settings: Settings, model: str) -> None:
    async def body(client: EngineClient) -> None:
        instance_id = await start(client, new_key())
        task = (await fetch(client, [instance_id]))[instance_id]
        await client.extend_lock(task.id, WORKER, timedelta(hours=2))
        raw = await client.external_task(task.id)
        assert raw is not None
        expiry = datetime.fromisoformat(raw["lockExpirationTime"])
        assert expiry > datetime.now(UTC) + timedelta(minutes=100)
        await client.complete(task.id, WORKER)

    scenario(settings, body)


def test_failure_without_retries_raises_an_incident(settings: Settings, model: str) -> None:
    async def body(client: EngineClient) -> None:
        instance_id = await start(client, new_key())
        task = (await fetch(client, [instance_id]))[instance_id]
        await client.handle_failure(
            task.id,
            WORKER,
            error_message="the work failed",
            error_details="Traceback ...",
            retries=0,
            retry_timeout=timedelta(seconds=1),
        )
        (incident,) = await client.incidents(
            process_instance_id=instance_id, incident_type="failedExternalTask"
        )
        assert incident["incidentMessage"] == "the work failed"
        assert incident["activityId"] == "work"
        raw = await client.external_task(task.id)
        assert raw is not None
        assert raw["retries"] == 0
        assert raw["errorMessage"] == "the work failed"

    scenario(settings, body)


def test_bpmn_error_takes_the_error_path(settings: Settings, model: str) -> None:
    async def body(client: EngineClient) -> None:
        instance_id = await start(client, new_key())
        task = (await fetch(client, [instance_id]))[instance_id]
        await client.handle_bpmn_error(
            task.id, WORKER, error_code="HANDLED", error_message="no", variables={"why": "x"}
        )
        instance = await client.historic_process_instance(instance_id)
        assert instance is not None
        assert instance["state"] == "COMPLETED"
        ended = await client.historic_activity_instances(
            process_instance_id=instance_id, activity_id="failed"
        )
        assert len(ended) == 1

    scenario(settings, body)


def test_create_incident_on_a_waiting_execution(settings: Settings, model: str) -> None:
    async def body(client: EngineClient) -> None:
        instance_id = await start_and_wait(client, new_key())
        (execution,) = await waiting(client, instance_id)
        incident_id = await client.create_incident(
            execution["id"],
            incident_type="relayReplyFailed",
            message="reply could not be delivered",
            configuration="job-42",
        )
        (incident,) = await client.incidents(process_instance_id=instance_id)
        assert incident["id"] == incident_id
        assert incident["incidentType"] == "relayReplyFailed"
        assert incident["incidentMessage"] == "reply could not be delivered"
        assert incident["configuration"] == "job-42"
        assert incident["activityId"] == CATCH_EVENT
        with pytest.raises(errors.BadRequest, match="Cannot find an execution"):
            await client.create_incident("no-such-execution", incident_type="x", message="m")

    scenario(settings, body)


def test_unknown_process_and_instance(settings: Settings) -> None:
    async def body(client: EngineClient) -> None:
        with pytest.raises(errors.NotFound, match="No matching process definition") as caught:
            await client.start_process(f"no-such-process-{uuid.uuid4()}")
        assert caught.value.status == 404
        assert await client.process_definition(f"no-such-process-{uuid.uuid4()}") is None
        assert await client.historic_process_instance(str(uuid.uuid4())) is None
        assert await client.external_task(str(uuid.uuid4())) is None

    scenario(settings, body)


def test_deploy_changed_only_keeps_the_version(settings: Settings) -> None:
    key = f"tiny-{uuid.uuid4().hex[:12]}"
    files = {f"{key}.bpmn": tiny_model(key)}

    async def body(client: EngineClient) -> None:
        first = await client.deploy(f"client-test-{key}", files)
        assert [d["version"] for d in first["deployedProcessDefinitions"].values()] == [1]
        again = await client.deploy(f"client-test-{key}", files)
        assert not again["deployedProcessDefinitions"]
        definition = await client.process_definition(key)
        assert definition is not None
        assert definition["version"] == 1
        forced = await client.deploy(f"client-test-{key}", files, changed_only=False)
        assert [d["version"] for d in forced["deployedProcessDefinitions"].values()] == [2]
        xml = await client.process_definition_xml(forced_id(forced))
        assert f'id="{key}"' in xml

    scenario(settings, body)


def forced_id(deployment: dict[str, Any]) -> str:
    (definition_id,) = deployment["deployedProcessDefinitions"]
    return str(definition_id)


@pytest.fixture(scope="module")
def decoy(engine: Engine) -> tuple[str, str]:
    """A user of its own for wrong passwords: a failed login throttles that user for seconds."""
    # Camunda's default id pattern allows letters and digits only.
    user, password = f"clientdecoy{uuid.uuid4().hex[:8]}", "decoy-password"
    with engine.client() as rest:
        response = rest.post(
            "/user/create",
            json={
                "profile": {"id": user, "firstName": "D", "lastName": "D", "email": "d@x.test"},
                "credentials": {"password": password},
            },
        )
    assert response.status_code == 204, response.text
    return user, password


def test_wrong_password_fails_authentication(engine: Engine, decoy: tuple[str, str]) -> None:
    user, _ = decoy
    wrong = Settings(url=engine.rest_url, user=user, password="not-the-password")

    async def body(client: EngineClient) -> None:
        assert await client.ready() is True  # the probe is open; it is no login attempt
        with pytest.raises(errors.AuthenticationFailed) as caught:
            await client.check_access()
        assert caught.value.status == 401
        assert repr(user) in str(caught.value)
        assert "not-the-password" not in str(caught.value)
        with pytest.raises(errors.AuthenticationFailed):
            await client.executions(process_instance_id="x")

    scenario(wrong, body)
