"""Local variables on the real engine: a handler's ``Complete(local_variables=...)`` and a
reply topic's ``Reply(complete_local_variables=...)`` land in the service task's own scope,
and ``local_variables=True`` fetches only that scope's variables (here an input mapping of
the task)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx

from camunda_relay import Complete, EngineClient, Reply, Router, Settings, Task, Worker
from tests.support.engine import PASSWORD, USER, Engine


def model(key: str, topic: str, message: str | None = None) -> bytes:
    """A process with the service task ``work``; with ``message``, a catch event of that
    message after it (a reply topic's model)."""
    after = "e"
    waits = ""
    if message is not None:
        after = "wait"
        waits = """<bpmn:intermediateCatchEvent id="wait">
      <bpmn:messageEventDefinition id="wait_def" messageRef="reply_msg" />
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="wait" targetRef="e" />"""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
                  id="local" targetNamespace="http://camunda-relay/tests">
  <bpmn:message id="reply_msg" name="{message or "unused"}" />
  <bpmn:process id="{key}" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="s" /><bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="work" />
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{topic}">
      <bpmn:extensionElements><camunda:inputOutput>
        <camunda:inputParameter name="mapped">in-scope</camunda:inputParameter>
      </camunda:inputOutput></bpmn:extensionElements>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="{after}" />{waits}
    <bpmn:endEvent id="e" />
  </bpmn:process>
</bpmn:definitions>
""".encode()


def test_local_variables_fetched_and_set_in_the_task_scope(
    engine: Engine, rest: httpx.Client
) -> None:
    suffix = uuid.uuid4().hex[:8]
    key, topic = f"local-{suffix}", f"local{suffix}"
    settings = Settings(url=engine.rest_url, user=USER, password=PASSWORD)
    seen: list[dict[str, object]] = []
    router = Router()

    @router.task(topic, local_variables=True)
    def work(task: Task) -> Complete:
        seen.append(dict(task.variables))
        return Complete(variables={"result": "global"}, local_variables={"note": "local"})

    async def scenario() -> str:
        async with EngineClient(settings) as client:
            await client.deploy(key, {f"{key}.bpmn": model(key, topic)})
            started = await client.start_process(key, variables={"outside": "process"})
        async with Worker(router, settings) as worker:
            for _ in range(20):
                await worker.run_once()
                if seen:
                    break
        return str(started["id"])

    instance = asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    assert seen == [{"mapped": "in-scope"}]  # not the process variable "outside"
    response = rest.get("/history/variable-instance", params={"processInstanceId": instance})
    assert response.status_code == 200, response.text
    scopes = {v["name"]: v["activityInstanceId"] for v in response.json()}
    assert scopes["result"] == instance  # the process instance's scope
    assert scopes["outside"] == instance
    assert scopes["note"] != instance
    assert scopes["note"] == scopes["mapped"]  # the service task's activity instance
    assert scopes["note"].startswith("work:")


def scopes(rest: httpx.Client, instance: str) -> dict[str, str]:
    """Each history variable of the instance: the activity instance of its scope."""
    response = rest.get("/history/variable-instance", params={"processInstanceId": instance})
    assert response.status_code == 200, response.text
    return {v["name"]: v["activityInstanceId"] for v in response.json()}


def test_a_reply_topic_sets_its_complete_local_variables_in_the_task_scope(
    engine: Engine, rest: httpx.Client
) -> None:
    suffix = uuid.uuid4().hex[:8]
    key, topic, message = f"local-reply-{suffix}", f"localReply{suffix}", f"done{suffix}"
    settings = Settings(url=engine.rest_url, user=USER, password=PASSWORD, journal=":memory:")
    router = Router()
    reply = Reply(
        message,
        complete_variables={"accepted": True},
        complete_local_variables=lambda task: {"taken_by": task.worker_id},
    )

    @router.task(topic, reply=reply)
    def work(task: Task) -> dict[str, object]:
        return {"answer": 42}

    async def scenario() -> str:
        async with EngineClient(settings) as client:
            await client.deploy(key, {f"{key}.bpmn": model(key, topic, message)})
            started = await client.start_process(key)
        async with Worker(router, settings) as worker:
            for _ in range(20):
                if await worker.run_once(long_poll=timedelta(seconds=1)):
                    break
        return str(started["id"])

    instance = asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    ended = rest.get(f"/history/process-instance/{instance}")
    assert ended.status_code == 200, ended.text
    assert ended.json()["state"] == "COMPLETED"  # the reply was delivered
    found = scopes(rest, instance)
    assert found["accepted"] == instance  # complete_variables: the process scope
    assert found["answer"] == instance  # the reply's variables: the process scope
    assert found["taken_by"] != instance
    assert found["taken_by"].startswith("work:")  # the service task's activity instance
