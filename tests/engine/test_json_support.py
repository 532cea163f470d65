"""Json variables on every engine flavour: stored where the engine has Spin's JSON data format
(Camunda), named at start and refused in one clear line where it has none (the bundled Operaton
engine: Operaton 1.0.3's Spin JSON format is not served). Runs on every flavour, one branch
each (CAMUNDA_RELAY_TEST_ENGINE)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest

from camunda_relay import (
    EngineClient,
    JsonUnsupported,
    Router,
    Settings,
    Task,
    VariableError,
    Worker,
)
from tests.support.engine import FLAVOUR, PASSWORD, USER, Engine

T = TypeVar("T")
TOPIC = "relay-json"
BPMN = f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="json-defs" targetNamespace="test">
  <bpmn:process id="{TOPIC}" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{TOPIC}" />
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="hold" />
    <bpmn:userTask id="hold" />
    <bpmn:sequenceFlow id="f3" sourceRef="hold" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>
"""


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, 120))


@pytest.fixture(scope="module")
def settings(engine: Engine) -> Settings:
    admin = Settings(url=engine.rest_url, user=USER, password=PASSWORD, journal=":memory:")

    async def deploy() -> None:
        async with EngineClient(admin) as client:
            await client.deploy("json-tests", {"json.bpmn": BPMN.encode()})

    run(deploy())
    user, password = engine.worker_auth
    return Settings(
        url=engine.rest_url,
        user=user,
        password=password,
        journal=":memory:",
        long_poll=timedelta(seconds=1),
        retry_timeout=timedelta(0),
    )


def test_the_probe_tells_whether_the_engine_stores_json(settings: Settings) -> None:
    async def probe() -> tuple[bool | None, bool | None]:
        async with EngineClient(settings) as client:
            return await client.stores_json(), client.json_variables

    assert run(probe()) == (FLAVOUR.json_variables, FLAVOUR.json_variables)


def test_a_dict_result_is_json_or_fails_naming_the_cause(
    engine: Engine, settings: Settings, rest: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    router = Router()

    @router.task(TOPIC, retries=0)
    def work(task: Task) -> dict[str, object]:
        return {"order": {"id": 7, "items": ["a", "b"]}, "count": 3}

    started = rest.post(f"/process-definition/key/{TOPIC}/start", json={})
    assert started.status_code == 200, started.text
    instance_id = started.json()["id"]

    async def scenario() -> None:
        async with Worker(router, settings) as worker:
            deadline = time.monotonic() + 60
            while not await worker.run_once(long_poll=timedelta(seconds=1)):
                assert time.monotonic() < deadline, "the task was never fetched"

    with caplog.at_level(logging.WARNING, logger="camunda_relay"):
        run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "Json" in r.getMessage()]
    variables = rest.get(
        f"/process-instance/{instance_id}/variables", params={"deserializeValues": "false"}
    ).json()
    incidents = rest.get("/incident", params={"processInstanceId": instance_id}).json()
    if FLAVOUR.json_variables:
        assert warnings == []
        assert variables["order"] == {
            "type": "Json",
            "value": '{"id":7,"items":["a","b"]}',
            "valueInfo": {},
        }
        assert incidents == []
        return
    (warning,) = warnings
    assert "stores no Json variables" in warning
    assert "\n" not in warning
    assert variables == {}, "nothing was completed"
    (incident,) = incidents
    assert incident["incidentType"] == "failedExternalTask"
    assert incident["incidentMessage"].startswith("VariableError: variable 'order': a dict")
    assert "stores no Json variables" in incident["incidentMessage"]


@pytest.mark.skipif(FLAVOUR.json_variables, reason=f"{FLAVOUR.title} stores Json variables")
def test_a_json_variable_sent_anyway_is_refused_in_one_line_not_a_bare_500(
    settings: Settings,
) -> None:
    async def correlate() -> None:
        async with EngineClient(settings) as client:
            client.json_variables = True  # as if the probe had not run
            with pytest.raises(JsonUnsupported) as refused:
                await client.correlate("nobody-waits", business_key="x", variables={"a": [1]})
            assert refused.value.message.startswith("the engine stores no Json variables")
            assert client.json_variables is False
            with pytest.raises(VariableError, match="stores no Json variables"):
                await client.correlate("nobody-waits", business_key="x", variables={"a": [1]})

    run(correlate())
