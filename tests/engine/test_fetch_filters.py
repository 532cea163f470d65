"""Each per-topic fetch filter on the real engine, fetched through EngineClient (the poller's
path): the matching tasks are locked, the others of the same topic stay unlocked.

Every test deploys processes of its own with a topic of its own, so no other test's fetch
can take their tasks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest

from camunda_relay.client import EngineClient, TopicRequest
from camunda_relay.filters import TopicFilter
from camunda_relay.settings import Settings
from tests.support.engine import PASSWORD, USER, Engine

T = TypeVar("T")
LOCK = timedelta(seconds=60)


def model(key: str, topic: str, version_tag: str | None = None) -> bytes:
    tag = f' camunda:versionTag="{version_tag}"' if version_tag else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
                  id="filters" targetNamespace="http://camunda-relay/tests">
  <bpmn:process id="{key}" isExecutable="true" camunda:historyTimeToLive="1"{tag}>
    <bpmn:startEvent id="s" /><bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="work" />
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{topic}" />
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="e" /><bpmn:endEvent id="e" />
  </bpmn:process>
</bpmn:definitions>
""".encode()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=120))


@pytest.fixture(scope="module")
def settings(engine: Engine) -> Settings:
    return Settings(url=engine.rest_url, user=USER, password=PASSWORD)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def fetch(client: EngineClient, topic: str, **filters: Any) -> set[str]:
    """The instance ids of the tasks one fetch with these filters locks."""
    request = TopicRequest(topic, LOCK, filters=TopicFilter.of(**filters))
    tasks = await client.fetch_and_lock(
        unique("w"), [request], max_tasks=50, long_poll=timedelta(seconds=1)
    )
    return {task.process_instance_id for task in tasks}


def unlocked(rest: httpx.Client, topic: str) -> set[str]:
    """The instance ids of the topic's tasks nobody holds."""
    response = rest.get("/external-task", params={"topicName": topic, "notLocked": "true"})
    assert response.status_code == 200, response.text
    return {task["processInstanceId"] for task in response.json()}


async def start(client: EngineClient, key: str, **kwargs: Any) -> str:
    return str((await client.start_process(key, **kwargs))["id"])


def test_process_definition_key_and_id(settings: Settings, rest: httpx.Client) -> None:
    topic = unique("byKey")
    first, second = unique("proc-a"), unique("proc-b")

    async def scenario() -> None:
        async with EngineClient(settings) as client:
            for key in (first, second):
                await client.deploy(key, {f"{key}.bpmn": model(key, topic)})
            a1, a2 = [await start(client, first) for _ in range(2)]
            b = await start(client, second)
            assert await fetch(client, topic, process_definition_keys=[first]) == {a1, a2}
            assert unlocked(rest, topic) == {b}
            definition = await client.process_definition(second)
            assert definition is not None
            got = await fetch(client, topic, process_definition_ids=[definition["id"]])
            assert got == {b}

    run(scenario())


def test_process_definition_version_tag(settings: Settings, rest: httpx.Client) -> None:
    topic, key = unique("byTag"), unique("proc-tag")

    async def scenario() -> None:
        async with EngineClient(settings) as client:
            await client.deploy(key, {f"{key}.bpmn": model(key, topic, "1.0")})
            old = await start(client, key)
            await client.deploy(key, {f"{key}.bpmn": model(key, topic, "2.0")})
            new = await start(client, key)
            assert await fetch(client, topic, process_definition_version_tag="2.0") == {new}
            assert unlocked(rest, topic) == {old}
            assert await fetch(client, topic, process_definition_version_tag="3.0") == set()

    run(scenario())


def test_business_key(settings: Settings, rest: httpx.Client) -> None:
    topic, key = unique("byBusinessKey"), unique("proc-bk")

    async def scenario() -> None:
        async with EngineClient(settings) as client:
            await client.deploy(key, {f"{key}.bpmn": model(key, topic)})
            wanted = await start(client, key, business_key="order-1")
            other = await start(client, key, business_key="order-2")
            assert await fetch(client, topic, business_key="order-1") == {wanted}
            assert unlocked(rest, topic) == {other}

    run(scenario())


def test_process_variables_by_value_any_of(settings: Settings, rest: httpx.Client) -> None:
    """The engine compares by value: a JSON number matches an Integer (or Long) variable of
    that value, a string never matches a number. Several names are OR-ed: a task is fetched
    when any one of them matches (unlike the other filters, which are AND-ed)."""
    topic, key = unique("byVariables"), unique("proc-vars")

    async def scenario() -> None:
        async with EngineClient(settings) as client:
            await client.deploy(key, {f"{key}.bpmn": model(key, topic)})
            north = await start(client, key, variables={"region": "north", "amount": 5})
            south = await start(client, key, variables={"region": "south", "amount": 5})
            big = await start(client, key, variables={"region": "north", "amount": 2**40})
            urgent = await start(client, key, variables={"region": "east", "urgent": True})
            assert await fetch(client, topic, process_variables={"amount": "5"}) == set()
            assert await fetch(client, topic, process_variables={"amount": 2**40}) == {big}
            assert await fetch(client, topic, process_variables={"region": "north"}) == {north}
            assert unlocked(rest, topic) == {south, urgent}
            either = {"urgent": True, "amount": 5}
            assert await fetch(client, topic, process_variables=either) == {south, urgent}

    run(scenario())
