"""Starting the bundled engine for tests, and the REST calls of the seed flow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from camunda_relay import Router, Settings, Worker
from camunda_relay.testing.engine import (
    FLAVOUR,
    PASSWORD,
    USER,
    WORKER_USER,
    Engine,
    start_engine,
)
from camunda_relay.worker import WorkerStats

__all__ = [
    "CATCH_EVENT",
    "FLAVOUR",
    "MESSAGE",
    "PASSWORD",
    "PROCESS_KEY",
    "TOPIC",
    "USER",
    "WORKER_USER",
    "Engine",
    "assert_finished_once",
    "catch_event_passages",
    "fetch_and_lock",
    "historic_instance",
    "run_seed_flow",
    "start_engine",
    "start_instance",
    "wait_for",
    "waiting_for_message",
    "work_until_finished",
]

# The engine itself (started, stopped, its credentials) is the one camunda_relay.testing
# ships to users.
PROCESS_KEY = "correlation-message"
TOPIC = "messageSending"
MESSAGE = "sample_response"
CATCH_EVENT = "wait_for_response"


def wait_for(
    condition: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def start_instance(rest: httpx.Client, business_key: str) -> str:
    response = rest.post(
        f"/process-definition/key/{PROCESS_KEY}/start", json={"businessKey": business_key}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def fetch_and_lock(rest: httpx.Client, worker_id: str, max_tasks: int = 10) -> list[dict[str, Any]]:
    response = rest.post(
        "/external-task/fetchAndLock",
        json={
            "workerId": worker_id,
            "maxTasks": max_tasks,
            "topics": [{"topicName": TOPIC, "lockDuration": 60_000}],
        },
    )
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()
    return tasks


def waiting_for_message(rest: httpx.Client, instance_id: str) -> bool:
    response = rest.get(
        "/execution",
        params={"processInstanceId": instance_id, "messageEventSubscriptionName": MESSAGE},
    )
    assert response.status_code == 200, response.text
    return len(response.json()) == 1


def historic_instance(rest: httpx.Client, instance_id: str) -> dict[str, Any]:
    response = rest.get(f"/history/process-instance/{instance_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def catch_event_passages(rest: httpx.Client, instance_id: str) -> list[dict[str, Any]]:
    response = rest.get(
        "/history/activity-instance",
        params={"processInstanceId": instance_id, "activityId": CATCH_EVENT},
    )
    assert response.status_code == 200, response.text
    passages: list[dict[str, Any]] = response.json()
    return passages


def run_seed_flow(rest: httpx.Client, business_key: str) -> str:
    """Start, fetch and complete the task, correlate by business key; return the instance id."""
    instance_id = start_instance(rest, business_key)
    tasks = wait_for(
        lambda: [
            t for t in fetch_and_lock(rest, "test-worker") if t["processInstanceId"] == instance_id
        ],
        what="the messageSending task",
    )
    (task,) = tasks
    assert task["businessKey"] == business_key
    assert task["topicName"] == TOPIC
    completed = rest.post(f"/external-task/{task['id']}/complete", json={"workerId": "test-worker"})
    assert completed.status_code == 204, completed.text
    assert waiting_for_message(rest, instance_id)
    assert historic_instance(rest, instance_id)["state"] == "ACTIVE"
    correlated = rest.post("/message", json={"messageName": MESSAGE, "businessKey": business_key})
    assert correlated.status_code == 204, correlated.text
    return instance_id


def assert_finished_once(rest: httpx.Client, instance_id: str) -> None:
    assert historic_instance(rest, instance_id)["state"] == "COMPLETED"
    passages = catch_event_passages(rest, instance_id)
    assert len(passages) == 1, passages
    assert passages[0]["endTime"] is not None
    assert not waiting_for_message(rest, instance_id)


def work_until_finished(
    router: Router,
    settings: Settings,
    rest: httpx.Client,
    instance_ids: Sequence[str],
    *,
    timeout: float = 240.0,
) -> WorkerStats:
    """Run a worker until every instance has finished (read from history with ``rest``), then
    stop it; fail after ``timeout`` seconds. Returns the worker's counters."""

    def finished() -> bool:
        states = [historic_instance(rest, i).get("state") for i in instance_ids]
        return all(state == "COMPLETED" for state in states)

    async def scenario() -> WorkerStats:
        async with Worker(router, settings) as worker:
            runner = asyncio.ensure_future(worker.run())
            try:
                while not await asyncio.to_thread(finished):
                    await asyncio.sleep(0.2)
            finally:
                worker.stop()
                await runner
            return worker.stats

    return asyncio.run(asyncio.wait_for(scenario(), timeout))
