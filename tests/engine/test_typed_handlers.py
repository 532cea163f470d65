"""Typed handler inputs and outputs on the real engine: a Json variable becomes the handler's
dataclass, the returned dataclass becomes variables, and an instance without the variable
gets an incident naming it and the type expected, not the value."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from camunda_relay import Router, Settings, Task, Worker
from tests.support.engine import PASSWORD, USER, Engine, wait_for


@dataclass
class Line:
    sku: str
    qty: int


@dataclass
class Order:
    id: int
    lines: list[Line]


@dataclass
class Receipt:
    order_id: int
    items: int


def model(key: str, topic: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
                  id="typed" targetNamespace="http://camunda-relay/tests">
  <bpmn:process id="{key}" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="s" /><bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="work" />
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{topic}" />
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="e" /><bpmn:endEvent id="e" />
  </bpmn:process>
</bpmn:definitions>
""".encode()


def start(rest: httpx.Client, key: str, variables: dict[str, object]) -> str:
    response = rest.post(f"/process-definition/key/{key}/start", json={"variables": variables})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


@pytest.mark.json
def test_a_typed_handler_gets_its_dataclass_and_a_missing_variable_is_an_incident(
    engine: Engine, rest: httpx.Client
) -> None:
    suffix = uuid.uuid4().hex[:8]
    key, topic = f"typed-{suffix}", f"typed{suffix}"
    files = {f"{key}.bpmn": (f"{key}.bpmn", model(key, topic), "application/xml")}
    deployed = rest.post("/deployment/create", data={"deployment-name": key}, files=files)
    assert deployed.status_code == 200, deployed.text
    order = {"id": 7, "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]}
    good = start(rest, key, {"order": {"value": json.dumps(order), "type": "Json"}})
    bad = start(rest, key, {"other": {"value": "s3cr3t", "type": "String"}})
    seen: list[Order] = []
    router = Router()

    @router.task(topic)
    async def handle(task: Task, order: Order) -> Receipt:
        seen.append(order)
        return Receipt(order_id=order.id, items=sum(line.qty for line in order.lines))

    settings = Settings(url=engine.rest_url, user=USER, password=PASSWORD, journal=":memory:")

    async def scenario() -> None:
        async with Worker(router, settings) as worker:
            for _ in range(10):
                if await worker.run_once(long_poll=timedelta(seconds=1)) == 0 and seen:
                    return

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    assert seen == [Order(7, [Line("a", 2), Line("b", 1)])]
    ended = rest.get("/history/variable-instance", params={"processInstanceId": good}).json()
    assert {v["name"]: v["value"] for v in ended if v["name"] != "order"} == {
        "order_id": 7,
        "items": 3,
    }
    incidents = wait_for(
        lambda: rest.get("/incident", params={"processInstanceId": bad}).json(),
        timeout=30,
        what="the incident",
    )
    (incident,) = incidents
    assert "variable 'order' is missing: expected Order" in incident["incidentMessage"]
    assert "s3cr3t" not in incident["incidentMessage"]
