"""File variables on the real engine: a process started with a File (as Tasklist's start form
sends one), read by the handler on first access (the process scope, and the task's own scope
through an input mapping), a File sent back with the reply and with a completion, and
downloaded from the engine byte for byte."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from datetime import timedelta
from typing import Any

import httpx

from camunda_relay import Complete, EngineClient, Router, Settings, Task, Worker
from camunda_relay.variables import File
from tests.support.engine import PASSWORD, USER, Engine, wait_for


def model(key: str, topic: str, message: str | None) -> bytes:
    """The task ``work``; with ``message``, a catch event of it after the task."""
    after, waits = "e", ""
    if message is not None:
        after = "wait"
        waits = """<bpmn:intermediateCatchEvent id="wait">
      <bpmn:messageEventDefinition id="wait_def" messageRef="reply_msg" />
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="wait" targetRef="e" />"""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
                  id="files" targetNamespace="http://camunda-relay/tests">
  <bpmn:message id="reply_msg" name="{message or "unused"}" />
  <bpmn:process id="{key}" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="s" /><bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="work" />
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{topic}" />
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="{after}" />{waits}
    <bpmn:endEvent id="e" />
  </bpmn:process>
</bpmn:definitions>
""".encode()


def start_with_file(rest: httpx.Client, key: str, content: bytes) -> str:
    """Start as Tasklist's start form does with a file field: a File variable in base64."""
    doc = {
        "type": "File",
        "value": base64.b64encode(content).decode(),
        "valueInfo": {"filename": "input.bin", "mimeType": "application/octet-stream"},
    }
    response = rest.post(
        f"/process-definition/key/{key}/start",
        json={"businessKey": f"file-{uuid.uuid4().hex[:6]}", "variables": {"doc": doc}},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def downloaded(rest: httpx.Client, instance: str, name: str) -> tuple[bytes, dict[str, Any]]:
    """A File variable of a finished instance, from the history: its bytes and valueInfo."""
    response = rest.get(
        "/history/variable-instance",
        params={"processInstanceId": instance, "variableName": name, "deserializeValues": "false"},
    )
    assert response.status_code == 200, response.text
    (variable,) = response.json()
    data = rest.get(f"/history/variable-instance/{variable['id']}/data")
    assert data.status_code == 200, data.text
    return data.content, variable["valueInfo"]


def deploy(engine: Engine, key: str, topic: str, message: str | None) -> Settings:
    settings = Settings(url=engine.rest_url, user=USER, password=PASSWORD, journal=":memory:")

    async def scenario() -> None:
        async with EngineClient(settings) as client:
            await client.deploy(key, {f"{key}.bpmn": model(key, topic, message)})

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    return settings


def work(router: Router, settings: Settings, rest: httpx.Client, instance: str) -> None:
    async def scenario() -> None:
        async with Worker(router, settings) as worker:
            for _ in range(30):
                await worker.run_once(long_poll=timedelta(seconds=1))
                ids = [instance]
                if await worker.client.historic_process_instances(
                    finished=True, process_instance_ids=ids
                ):
                    return

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    failed = rest.get("/external-task", params={"processInstanceId": instance}).json()
    assert not [t for t in failed if t.get("errorMessage")], failed
    wait_for(
        lambda: rest.get(f"/history/process-instance/{instance}").json()["state"] == "COMPLETED",
        timeout=30,
        what="the instance to finish",
    )


def test_a_reply_handler_reads_the_started_file_and_replies_with_one(
    engine: Engine, rest: httpx.Client
) -> None:
    suffix = uuid.uuid4().hex[:8]
    key, topic, message = f"files-{suffix}", f"files{suffix}", f"filed{suffix}"
    settings = deploy(engine, key, topic, message)
    content = os.urandom(300_000)
    instance = start_with_file(rest, key, content)
    seen: list[tuple[str, str | None, bool, bytes]] = []
    router = Router()

    @router.task(topic, reply=message)
    async def handle(task: Task) -> dict[str, object]:
        doc = task.variables["doc"]
        assert isinstance(doc, File)
        loaded_before = doc.loaded
        data = await doc.read()
        seen.append((doc.name, doc.mime_type, loaded_before, data))
        return {"answer": File("answer.bin", data[::-1], "application/x-reversed", "binary")}

    work(router, settings, rest, instance)
    ((name, mime_type, loaded_before, data),) = seen
    assert (name, mime_type, loaded_before) == ("input.bin", "application/octet-stream", False)
    assert data == content
    answer, info = downloaded(rest, instance, "answer")
    assert answer == content[::-1]
    assert info == {
        "filename": "answer.bin",
        "mimeType": "application/x-reversed",
        "encoding": "binary",
    }


def test_a_plain_handler_reads_a_local_file_and_completes_with_one(
    engine: Engine, rest: httpx.Client
) -> None:
    suffix = uuid.uuid4().hex[:8]
    key, topic = f"files-local-{suffix}", f"filesLocal{suffix}"
    settings = deploy(engine, key, topic, None)
    content = os.urandom(100_000)
    instance = start_with_file(rest, key, b"the process scope's")
    # A File in the task's own scope, as another worker or an API client sets one.
    (task,) = rest.get("/external-task", params={"processInstanceId": instance}).json()
    response = rest.post(
        f"/execution/{task['executionId']}/localVariables/localDoc/data",
        files={"data": ("local.bin", content, "application/octet-stream")},
        data={"valueType": "File"},
    )
    assert response.status_code == 204, response.text
    seen: list[bytes] = []
    router = Router()

    @router.task(topic, local_variables=True)
    def handle(task: Task) -> Complete:
        assert set(task.variables) == {"localDoc"}  # the task's own scope only
        local = task.variables["localDoc"]
        assert isinstance(local, File)
        seen.append(local.read_sync())
        copy = File("copy.bin", local.read_sync())
        return Complete(variables={"copy": copy}, local_variables={"note": File("n.txt", b"n")})

    work(router, settings, rest, instance)
    assert seen == [content]
    assert downloaded(rest, instance, "copy")[0] == content
    assert downloaded(rest, instance, "note")[0] == b"n"
