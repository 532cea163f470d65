"""A lost journal against the real engine: a worker whose SQLite journal was emptied says so
and finds the instance left waiting for its reply at once, not after the first interval.

The worker runs on a :class:`~camunda_relay.clock.ManualClock` that never moves: its sweep
can only come from "at once", never from a timer running out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest

from camunda_relay import EngineClient, Router, Task, Worker
from camunda_relay.clock import ManualClock
from tests.engine.test_worker import settings_for
from tests.support.engine import Engine

BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="lost-defs" targetNamespace="test">
  <bpmn:message id="reply_msg" name="relay_lost_reply" />
  <bpmn:process id="relay-lost" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="send" />
    <bpmn:serviceTask id="send" camunda:type="external" camunda:topic="relay-lost" />
    <bpmn:sequenceFlow id="f2" sourceRef="send" targetRef="wait" />
    <bpmn:intermediateCatchEvent id="wait">
      <bpmn:messageEventDefinition id="wait_def" messageRef="reply_msg" />
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="wait" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>
"""


def test_an_emptied_journal_is_loud_and_its_orphan_is_found_at_once(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with engine.client() as rest:
        deployed = rest.post(
            "/deployment/create",
            data={"deployment-name": "lost-journal", "enable-duplicate-filtering": "true"},
            files={"lost.bpmn": ("lost.bpmn", BPMN.encode(), "application/xml")},
        )
        assert deployed.status_code == 200, deployed.text
        started = rest.post("/process-definition/key/relay-lost/start", json={})
        instance_id = started.json()["id"]
        # The worker that completed its task recorded the job in a journal now lost.
        fetched = rest.post(
            "/external-task/fetchAndLock",
            json={
                "workerId": "lost-worker",
                "maxTasks": 100,
                "topics": [{"topicName": "relay-lost", "lockDuration": 60_000}],
            },
        )
        (task,) = [t for t in fetched.json() if t["processInstanceId"] == instance_id]
        done = rest.post(f"/external-task/{task['id']}/complete", json={"workerId": "lost-worker"})
        assert done.status_code == 204, done.text

    journal = tmp_path / "journal.sqlite3"
    journal.write_bytes(b"")  # emptied: the volume was replaced
    router = Router()

    @router.task("relay-lost", reply="relay_lost_reply")
    async def send(task: Task) -> dict[str, object]:
        return {}

    settings = settings_for(
        engine,
        journal=str(journal),
        reconcile_interval=timedelta(hours=1),
        reconcile_min_age=timedelta(0),
    )

    async def scenario() -> None:
        async with (
            EngineClient(settings) as client,
            Worker(router, settings, client=client, clock=ManualClock()) as worker,
        ):
            running = asyncio.ensure_future(worker.run())
            deadline = time.monotonic() + 60
            while not any(instance_id in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "no sweep reported the orphan"
                await asyncio.sleep(0.05)
            worker.stop()
            await running

    with caplog.at_level(logging.WARNING, logger="camunda_relay"):
        asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(journal) in m and "new or empty" in m for m in messages)
    (orphan,) = [m for m in messages if instance_id in m]
    assert "waits for reply message 'relay_lost_reply'" in orphan
