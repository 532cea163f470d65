"""The worker against the real engine: the conception's pattern, failures, races, stops."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from camunda_relay import (
    BpmnError,
    EngineClient,
    Reply,
    Router,
    Settings,
    Task,
    Worker,
    bundled_engine,
)
from camunda_relay.backoff import Backoff
from camunda_relay.examples.conception import make_router
from tests.support.engine import (
    PASSWORD,
    PROCESS_KEY,
    USER,
    Engine,
    assert_finished_once,
    start_engine,
)
from tests.support.tools import free_port, run_cli

T = TypeVar("T")

PLAIN_BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="plain-defs" targetNamespace="test">
  <bpmn:error id="rejected_error" errorCode="REJECTED" />
  <bpmn:process id="relay-plain" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="check" />
    <bpmn:serviceTask id="check" camunda:type="external" camunda:topic="relay-plain" />
    <bpmn:sequenceFlow id="f2" sourceRef="check" targetRef="accepted" />
    <bpmn:endEvent id="accepted" />
    <bpmn:boundaryEvent id="on_rejected" attachedToRef="check">
      <bpmn:errorEventDefinition id="on_rejected_def" errorRef="rejected_error" />
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="on_rejected" targetRef="rejected" />
    <bpmn:endEvent id="rejected" />
  </bpmn:process>
</bpmn:definitions>
"""

ASYNC_BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="async-defs" targetNamespace="test">
  <bpmn:message id="reply_msg" name="relay_async_reply" />
  <bpmn:process id="relay-async" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="send" />
    <bpmn:serviceTask id="send" camunda:type="external" camunda:topic="relay-async"
      camunda:asyncAfter="true" />
    <bpmn:sequenceFlow id="f2" sourceRef="send" targetRef="wait" />
    <bpmn:intermediateCatchEvent id="wait">
      <bpmn:messageEventDefinition id="wait_def" messageRef="reply_msg" />
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="wait" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>
"""


def settings_for(engine: Engine, **changes: Any) -> Settings:
    base: dict[str, Any] = {
        "url": engine.rest_url,
        "user": USER,
        "password": PASSWORD,
        "long_poll": timedelta(seconds=2),
        "retry_timeout": timedelta(milliseconds=200),
        "journal": ":memory:",
    }
    base.update(changes)
    return Settings(**base)


def run(coroutine: Coroutine[Any, Any, T], timeout: float = 300) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def finished(client: EngineClient, instance_ids: Sequence[str]) -> bool:
    wanted = set(instance_ids)
    done = await client.historic_process_instances(finished=True, process_instance_ids=instance_ids)
    return wanted <= {item["id"] for item in done}


async def with_worker(
    router: Router, settings: Settings, scenario: Callable[[Worker], Awaitable[T]]
) -> T:
    async with Worker(router, settings) as worker:
        runner = asyncio.ensure_future(worker.run())
        try:
            return await scenario(worker)
        finally:
            worker.stop()
            await runner


@pytest.fixture(scope="module")
def deployed(engine: Engine) -> None:
    async def deploy() -> None:
        async with EngineClient(settings_for(engine)) as client:
            await client.deploy(
                "worker-tests",
                {"plain.bpmn": PLAIN_BPMN.encode(), "async.bpmn": ASYNC_BPMN.encode()},
            )

    run(deploy())


def variable_values(rest: httpx.Client, name: str, instance_ids: Sequence[str]) -> dict[str, Any]:
    response = rest.post(
        "/history/variable-instance",
        json={"variableName": name, "processInstanceIdIn": list(instance_ids)},
    )
    assert response.status_code == 200, response.text
    return {item["processInstanceId"]: item["value"] for item in response.json()}


def test_conception_worker_finishes_200_instances_each_with_its_own_result(
    engine: Engine, rest: httpx.Client, tmp_path: Path
) -> None:
    journal = str(tmp_path / "journal.sqlite3")
    settings = settings_for(engine, max_in_flight=64, journal=journal)
    keys = [f"batch-{uuid.uuid4().hex[:8]}-{n}" for n in range(200)]

    async def scenario(worker: Worker) -> list[str]:
        gate = asyncio.Semaphore(16)

        async def start(key: str) -> str:
            async with gate:
                return str((await worker.client.start_process(PROCESS_KEY, business_key=key))["id"])

        ids = list(await asyncio.gather(*(start(key) for key in keys)))
        await eventually(lambda: finished(worker.client, ids), timeout=240, what="200 finished")
        return ids

    ids = run(with_worker(make_router(0.05), settings, scenario))
    results = variable_values(rest, "processed_for", ids)
    assert results == dict(zip(ids, keys, strict=True))
    assert variable_values(rest, "var2", ids) == dict.fromkeys(ids, "value")
    for instance_id in ids[:5]:
        assert_finished_once(rest, instance_id)


def test_shared_business_key_each_instance_gets_its_own_result(
    engine: Engine, rest: httpx.Client
) -> None:
    shared = f"shared-{uuid.uuid4().hex[:8]}"
    router = Router()

    @router.task("messageSending", reply=Reply("sample_response"))
    async def handle(task: Task) -> dict[str, object]:
        return {"own_result": task.process_instance_id}

    async def scenario(worker: Worker) -> list[str]:
        ids = [
            str((await worker.client.start_process(PROCESS_KEY, business_key=shared))["id"])
            for _ in range(3)
        ]
        await eventually(lambda: finished(worker.client, ids), timeout=60, what="3 finished")
        return ids

    ids = run(with_worker(router, settings_for(engine), scenario))
    assert variable_values(rest, "own_result", ids) == {i: i for i in ids}
    incidents = rest.get("/incident", params={"processDefinitionKeyIn": PROCESS_KEY}).json()
    # Other tests on the shared engine leave incidents of their own instances.
    assert [i for i in incidents if i["processInstanceId"] in ids] == []


def test_handler_error_reports_decreasing_retries_then_incident(
    engine: Engine, rest: httpx.Client, deployed: None
) -> None:
    router = Router()

    @router.task("relay-plain", retries=2, retry_timeout=timedelta(0))
    def check(task: Task) -> None:
        raise ValueError("cannot check this order")

    async def scenario(worker: Worker) -> str:
        instance_id = str((await worker.client.start_process("relay-plain"))["id"])

        async def incident() -> list[dict[str, Any]]:
            return await worker.client.incidents(process_instance_id=instance_id)

        await eventually(incident, timeout=60, what="an incident")
        return instance_id

    instance_id = run(with_worker(router, settings_for(engine), scenario))
    log = rest.get(
        "/history/external-task-log",
        params={
            "processInstanceId": instance_id,
            "failureLog": "true",
            "sortBy": "timestamp",
            "sortOrder": "asc",
        },
    ).json()
    # Each log entry holds the retries the task had when it failed: none yet, then 2, then 1;
    # the third failure set them to 0, which is the incident below.
    assert [entry["retries"] for entry in log] == [None, 2, 1]
    assert {entry["errorMessage"] for entry in log} == {"ValueError: cannot check this order"}
    (incident,) = rest.get("/incident", params={"processInstanceId": instance_id}).json()
    assert incident["incidentType"] == "failedExternalTask"


def test_a_failing_handlers_text_goes_bounded_to_camunda_and_never_to_a_log(
    engine: Engine, rest: httpx.Client, deployed: None, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "CANARY-" + uuid.uuid4().hex
    router = Router()

    @router.task("relay-plain", retries=0, retry_timeout=timedelta(0))
    def check(task: Task) -> None:
        raise ValueError(f"invalid literal for int() with base 10: {canary!r} " + "x" * 2000)

    async def scenario(worker: Worker) -> str:
        instance_id = str((await worker.client.start_process("relay-plain"))["id"])

        async def incident() -> list[dict[str, Any]]:
            return await worker.client.incidents(process_instance_id=instance_id)

        await eventually(incident, timeout=60, what="an incident")
        return instance_id

    with caplog.at_level(logging.DEBUG, logger="camunda_relay"):
        instance_id = run(with_worker(router, settings_for(engine), scenario))
    logged = "\n".join(logging.Formatter("%(message)s").format(r) for r in caplog.records)
    assert "ValueError" in logged
    assert canary not in logged
    (entry,) = rest.get(
        "/history/external-task-log",
        params={"processInstanceId": instance_id, "failureLog": "true"},
    ).json()
    expected = f"ValueError: invalid literal for int() with base 10: '{canary}'"
    assert entry["errorMessage"].startswith(expected)
    assert len(entry["errorMessage"]) == 500
    details = rest.get(f"/history/external-task-log/{entry['id']}/error-details")
    assert details.status_code == 200
    assert "Traceback" in details.text


def test_bpmn_error_is_taken_by_the_error_boundary_event(
    engine: Engine, rest: httpx.Client, deployed: None
) -> None:
    router = Router()

    @router.task("relay-plain")
    async def check(task: Task) -> None:
        raise BpmnError("REJECTED", "order rejected")

    async def scenario(worker: Worker) -> str:
        instance_id = str((await worker.client.start_process("relay-plain"))["id"])
        await eventually(lambda: finished(worker.client, [instance_id]), timeout=60, what="end")
        return instance_id

    instance_id = run(with_worker(router, settings_for(engine), scenario))
    ends = rest.get(
        "/history/activity-instance",
        params={"processInstanceId": instance_id, "activityType": "noneEndEvent"},
    ).json()
    assert [end["activityId"] for end in ends] == ["rejected"]


def test_async_continuation_race_every_message_delivered_once(
    engine: Engine, rest: httpx.Client, deployed: None
) -> None:
    router = Router()

    @router.task("relay-async", reply="relay_async_reply")
    async def send(task: Task) -> dict[str, object]:
        return {"answer": 42}

    async def scenario(worker: Worker) -> list[str]:
        ids = [str((await worker.client.start_process("relay-async"))["id"]) for _ in range(20)]
        await eventually(lambda: finished(worker.client, ids), timeout=120, what="20 finished")
        return ids

    ids = run(with_worker(router, settings_for(engine), scenario))
    for instance_id in ids:
        passages = rest.get(
            "/history/activity-instance",
            params={"processInstanceId": instance_id, "activityId": "wait"},
        ).json()
        assert len(passages) == 1
    assert rest.get("/incident", params={"processDefinitionKeyIn": "relay-async"}).json() == []


def _worker_process(
    engine: Engine, work_seconds: str, grace: str, journal: Path
) -> subprocess.Popen[str]:
    env = {
        "CAMUNDA_JOURNAL": str(journal),
        **os.environ,
        "CAMUNDA_URL": engine.rest_url,
        "CAMUNDA_USER": USER,
        "CAMUNDA_PASSWORD": PASSWORD,
        "CAMUNDA_SHUTDOWN_GRACE": grace,
        "CAMUNDA_LONG_POLL": "5",
        "SAMPLE_WORK_SECONDS": work_seconds,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "camunda_relay.cli", "worker", "camunda_relay.examples.conception"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_mid_work_exits_zero_within_grace_without_failures(
    engine: Engine, rest: httpx.Client, tmp_path: Path
) -> None:
    from tests.support.engine import start_instance, wait_for, waiting_for_message

    worker = _worker_process(engine, "4", "20", tmp_path / "journal.sqlite3")
    try:
        instance_id = start_instance(rest, f"sigterm-{uuid.uuid4().hex[:8]}")
        wait_for(lambda: waiting_for_message(rest, instance_id), timeout=60, what="task completed")
        stopped_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
        took = time.monotonic() - stopped_at
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, stderr
    assert took < 20
    assert "Traceback" not in stderr
    assert_finished_once(rest, instance_id)
    failures = rest.get(
        "/history/external-task-log",
        params={"processInstanceId": instance_id, "failureLog": "true"},
    ).json()
    assert failures == []


def test_engine_down_for_20_seconds_worker_survives_and_all_finish(
    engine_jar: Path, tmp_path: Path
) -> None:
    port = free_port()
    first = start_engine(engine_jar, tmp_path, port)
    settings = settings_for(first)
    fast = Backoff(base=timedelta(milliseconds=200), cap=timedelta(seconds=2))
    engines = [first]

    async def scenario() -> list[str]:
        async with Worker(make_router(1.0), settings, poll_backoff=fast) as worker:
            runner = asyncio.ensure_future(worker.run())
            ids = [
                str(
                    (await worker.client.start_process(PROCESS_KEY, business_key=f"down-{n}"))["id"]
                )
                for n in range(10)
            ]
            await asyncio.to_thread(bundled_engine.stop, first.info.pid)
            await asyncio.sleep(20)  # the outage itself, not a wait for a condition
            assert not runner.done(), "the worker must survive the outage"
            engines.append(await asyncio.to_thread(start_engine, engine_jar, tmp_path, port))
            await eventually(lambda: finished(worker.client, ids), timeout=180, what="all finished")
            assert worker.stats.engine_errors > 0
            worker.stop()
            await runner
            return ids

    try:
        ids = run(scenario(), timeout=400)
        with engines[-1].client() as rest:
            for instance_id in ids:
                assert_finished_once(rest, instance_id)
    finally:
        for running in engines:
            bundled_engine.stop(running.info.pid)


def test_reply_to_a_message_the_model_does_not_have_is_an_incident_at_once(
    engine: Engine, rest: httpx.Client, deployed: None
) -> None:
    router = Router()

    @router.task("relay-async", reply="no_such_message")
    async def send(task: Task) -> dict[str, object]:
        return {}

    async def scenario(worker: Worker) -> str:
        instance_id = str((await worker.client.start_process("relay-async"))["id"])

        async def incident() -> list[dict[str, Any]]:
            return await worker.client.incidents(process_instance_id=instance_id)

        await eventually(incident, timeout=60, what="an incident")
        return instance_id

    instance_id = run(with_worker(router, settings_for(engine), scenario))
    (incident,) = rest.get("/incident", params={"processInstanceId": instance_id}).json()
    assert incident["incidentType"] == "camundaRelay"
    assert "no catch event for message 'no_such_message'" in incident["incidentMessage"]


@pytest.mark.parametrize(
    ("target", "env_change", "message"),
    [
        ("no_such_module_xyz", {}, "cannot import worker module 'no_such_module_xyz'"),
        ("camunda_relay.settings:Settings", {}, "is not a camunda_relay Router"),
        (
            "camunda_relay.examples.conception",
            {"CAMUNDA_PASSWORD": "canary-wrong-3f9a"},
            "refused user",
        ),
        (
            "camunda_relay.examples.conception",
            {"CAMUNDA_URL": f"http://127.0.0.1:{free_port()}/engine-rest"},
            "not available",
        ),
        ("camunda_relay.examples.conception", {"CAMUNDA_JOURNAL": "<garbage>"}, "damaged"),
        ("camunda_relay.examples.conception", {"CAMUNDA_JOURNAL": "<folder>"}, "is a folder"),
        (
            "camunda_relay.examples.conception",
            {
                "CAMUNDA_JOURNAL": f"postgresql://u:secret@127.0.0.1:{free_port()}/db",
                "CAMUNDA_JOURNAL_LEASE": "2",
            },
            "no answer within 2 s at start",
        ),
    ],
    ids=[
        "unknown-module",
        "not-a-router",
        "wrong-password",
        "engine-unreachable",
        "garbage-journal",
        "journal-is-a-folder",
        "journal-database-unreachable",
    ],
)
def test_worker_cli_bad_input_is_one_clear_line(
    engine: Engine, tmp_path: Path, target: str, env_change: dict[str, str], message: str
) -> None:
    user = "workerdecoy" if "CAMUNDA_PASSWORD" in env_change else USER
    if user != USER:
        with engine.client() as rest:
            rest.post(
                "/user/create",
                json={
                    "profile": {"id": user, "firstName": "W", "lastName": "D", "email": "w@x.test"},
                    "credentials": {"password": "right-password"},
                },
            )
    env = {
        "CAMUNDA_URL": engine.rest_url,
        "CAMUNDA_USER": user,
        "CAMUNDA_PASSWORD": PASSWORD,
        "CAMUNDA_JOURNAL": str(tmp_path / "journal.sqlite3"),
        **env_change,
    }
    if env["CAMUNDA_JOURNAL"] == "<garbage>":
        env["CAMUNDA_JOURNAL"] = str(tmp_path / "garbage.sqlite3")
        Path(env["CAMUNDA_JOURNAL"]).write_bytes(b"not a journal\n" * 300)
    elif env["CAMUNDA_JOURNAL"] == "<folder>":
        env["CAMUNDA_JOURNAL"] = str(tmp_path)
    result = run_cli("worker", target, env=env, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "secret" not in result.stderr
    assert "canary-wrong-3f9a" not in lines[0]  # the password is never shown
