"""The worker-wide fetch order on the real engine: ``use_priority`` (usePriority) and
``fetch_order`` (sorting by create time), fetched one task at a time through EngineClient
(the poller's path).

Each test deploys a process of its own with a topic of its own and starts three instances,
one after another, whose tasks have the priorities ``low``, ``high`` and ``middle`` (the
model's ``camunda:taskPriority`` is an expression of a variable): ordered by priority they
come high, middle, low; by create time low, high, middle (oldest first) or middle, high, low
(newest first). Each order differs from the others in its first task, so every assertion
fails when the engine ignores the option it tests. With both on, two tasks of equal priority
show the create time deciding among equals.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest

from camunda_relay.client import EngineClient, TopicRequest
from camunda_relay.settings import Settings
from camunda_relay.variables import parse_date
from tests.support.engine import PASSWORD, USER, Engine, wait_for

T = TypeVar("T")
LOCK = timedelta(seconds=60)
PRIORITIES = {"low": 1, "high": 50, "middle": 10}  # started in this order


def model(key: str, topic: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
                  id="order" targetNamespace="http://camunda-relay/tests">
  <bpmn:process id="{key}" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="s" /><bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="work" />
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{topic}"
                      camunda:taskPriority="${{priority}}" />
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="e" /><bpmn:endEvent id="e" />
  </bpmn:process>
</bpmn:definitions>
""".encode()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=120))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def created(rest: httpx.Client, instance: str) -> tuple[int, datetime | None]:
    """The priority and create time of the instance's external task (None where the engine
    does not show it: Camunda 7.21 sorts by it but leaves it out of the task's REST form)."""
    response = rest.get("/external-task", params={"processInstanceId": instance})
    assert response.status_code == 200, response.text
    (task,) = response.json()
    when = task.get("createTime")
    return task["priority"], parse_date(when) if when else None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def until_past(ms: int) -> None:
    """Wait until this machine's clock is in a later millisecond than ``ms``."""
    wait_for(lambda: now_ms() > ms, timeout=5, what="the clock to pass a millisecond")


def start_in_order(rest: httpx.Client, key: str, priorities: dict[str, int]) -> dict[str, str]:
    """Start one instance per entry of ``priorities``, in their order, each task created in
    a later millisecond than the one before: a start begins only once this machine's clock
    (the engine's too) has passed the millisecond in which the previous start was answered,
    after its task was created. Where the engine shows create times, they are checked."""
    instances: dict[str, str] = {}
    answered: int | None = None
    latest: datetime | None = None
    for name, priority in priorities.items():
        if answered is not None:
            until_past(answered)
        variables = {"priority": {"value": priority, "type": "Integer"}}
        started = rest.post(f"/process-definition/key/{key}/start", json={"variables": variables})
        answered = now_ms()
        assert started.status_code == 200, started.text
        instance = str(started.json()["id"])
        got, when = created(rest, instance)
        assert got == priority
        if when is not None and latest is not None:
            assert when > latest, "create times in the order of the starts"
        instances[name], latest = instance, when
    return instances


def fetched_one_by_one(
    settings: Settings,
    rest: httpx.Client,
    use_priority: bool,
    fetch_order: str,
    priorities: dict[str, int] = PRIORITIES,
) -> list[str]:
    """The names (of ``priorities``) of the tasks, in the order fetches of one task each lock
    them under these settings."""
    topic, key = unique("order"), unique("proc-order")
    ordered = Settings(
        url=settings.url,
        user=settings.user,
        password=settings.password,
        use_priority=use_priority,
        fetch_order=fetch_order,  # type: ignore[arg-type]
    )

    async def deploy() -> None:
        async with EngineClient(ordered) as client:
            await client.deploy(key, {f"{key}.bpmn": model(key, topic)})

    async def fetch_each(names: dict[str, str]) -> list[str]:
        async with EngineClient(ordered) as client:
            order: list[str] = []
            for _ in priorities:
                (task,) = await client.fetch_and_lock(
                    unique("w"),
                    [TopicRequest(topic, LOCK)],
                    max_tasks=1,
                    long_poll=timedelta(seconds=1),
                )
                order.append(names[task.process_instance_id])
            return order

    run(deploy())
    instances = start_in_order(rest, key, priorities)
    return run(fetch_each({instance: name for name, instance in instances.items()}))


@pytest.fixture(scope="module")
def settings(engine: Engine) -> Settings:
    return Settings(url=engine.rest_url, user=USER, password=PASSWORD)


def test_use_priority_fetches_the_highest_priority_first(
    settings: Settings, rest: httpx.Client
) -> None:
    assert fetched_one_by_one(settings, rest, True, "none") == ["high", "middle", "low"]


def test_create_time_ascending_without_priority_fetches_the_oldest_first(
    settings: Settings, rest: httpx.Client
) -> None:
    """The oldest task has the lowest priority: first all the same, so priority is off. (On
    the bundled engine the order without any sorting happens to be the same, measured by
    leaving the field out; the descending test is the one that needs ``sorting``.)"""
    assert fetched_one_by_one(settings, rest, False, "create-time-asc") == [
        "low",
        "high",
        "middle",
    ]


def test_create_time_descending_fetches_the_newest_first(
    settings: Settings, rest: httpx.Client
) -> None:
    assert fetched_one_by_one(settings, rest, False, "create-time-desc") == [
        "middle",
        "high",
        "low",
    ]


@pytest.mark.parametrize(
    ("fetch_order", "expected"),
    [("create-time-asc", ["high", "old", "new"]), ("create-time-desc", ["high", "new", "old"])],
)
def test_with_priority_on_create_time_orders_among_equal_priorities(
    settings: Settings, rest: httpx.Client, fetch_order: str, expected: list[str]
) -> None:
    """Both on: the highest priority first (by create time alone, "old" or "new" would
    be); the two of equal priority by create time (both orders hold, so not by chance)."""
    priorities = {"old": 5, "high": 50, "new": 5}
    assert fetched_one_by_one(settings, rest, True, fetch_order, priorities) == expected
