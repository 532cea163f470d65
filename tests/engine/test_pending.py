"""``camunda-relay pending`` as a user runs it: a SQLite journal written by a real worker
against the real engine, the CLI in a subprocess.

The tests use a process of their own (topic ``relay-pending``, message
``relay_pending_reply``), so tasks and waiting instances left by other tests on the shared
engine never mix with theirs. The worker, the reconciler and the CLI log in as the engine's
least-privilege worker user; only the deployment and the process starts are the
administrator's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from camunda_relay import EngineClient, Job, JobState, Router, Settings, Task, Worker
from camunda_relay.client import TopicRequest
from camunda_relay.journal.sqlite import SqliteJournal
from tests.support import postgres as pg
from tests.support.engine import PASSWORD, USER, WORKER_USER, Engine

T = TypeVar("T")

PROCESS = "relay-pending"
TOPIC = "relay-pending"
MESSAGE = "relay_pending_reply"
CATCH = "wait"
CANARY_VARIABLE = "canary-variable-value-7f3a"
CANARY_RESULT = "canary-result-value-91bc"

BPMN = f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="pending-defs" targetNamespace="test">
  <bpmn:message id="reply_msg" name="{MESSAGE}" />
  <bpmn:process id="{PROCESS}" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="send" />
    <bpmn:serviceTask id="send" camunda:type="external" camunda:topic="{TOPIC}" />
    <bpmn:sequenceFlow id="f2" sourceRef="send" targetRef="{CATCH}" />
    <bpmn:intermediateCatchEvent id="{CATCH}">
      <bpmn:messageEventDefinition id="wait_def" messageRef="reply_msg" />
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="{CATCH}" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>
"""


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, 120))


def settings_for(
    engine: Engine, journal: Path | str = ":memory:", *, admin: bool = False
) -> Settings:
    return Settings(
        url=engine.rest_url,
        user=USER if admin else WORKER_USER,
        password=PASSWORD if admin else engine.worker_password,
        long_poll=timedelta(seconds=1),
        retry_timeout=timedelta(milliseconds=50),
        journal=str(journal),
    )


def environment(engine: Engine | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")}
    if engine is not None:
        env.update(
            CAMUNDA_URL=engine.rest_url,
            CAMUNDA_USER=WORKER_USER,
            CAMUNDA_PASSWORD=engine.worker_password,
        )
    env.update(extra)
    return env


def cli(
    engine: Engine | None, *args: str, input: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "camunda_relay.cli", "pending", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment(engine, **extra),
        input=input,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def jobs_json(engine: Engine, journal: Path, *args: str) -> list[dict[str, Any]]:
    result = cli(engine, "--journal", str(journal), "--json", *args)
    assert result.returncode == 0, result.stderr
    assert CANARY_VARIABLE not in result.stdout
    assert CANARY_RESULT not in result.stdout
    jobs: list[dict[str, Any]] = json.loads(result.stdout)
    return jobs


@pytest.fixture(scope="module")
def deployed(engine: Engine) -> None:
    async def deploy() -> None:
        async with EngineClient(settings_for(engine, admin=True)) as client:
            await client.deploy("pending-tests", {"pending.bpmn": BPMN.encode()})

    run(deploy())


def start(rest: httpx.Client, key: str) -> str:
    response = rest.post(
        f"/process-definition/key/{PROCESS}/start",
        json={
            "businessKey": key,
            "variables": {"secret": {"value": CANARY_VARIABLE, "type": "String"}},
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def fetch_and_complete(client: EngineClient, instance_id: str) -> Task:
    """Lock and complete the instance's task as a worker would, without any journal."""
    for _ in range(50):
        tasks = await client.fetch_and_lock(
            "pending-test",
            [TopicRequest(TOPIC, timedelta(seconds=60))],
            max_tasks=20,
            long_poll=timedelta(seconds=1),
        )
        for other in tasks:
            if other.process_instance_id != instance_id:
                await client.unlock(other.id)
        mine = [task for task in tasks if task.process_instance_id == instance_id]
        if mine:
            await client.complete(mine[0].id, "pending-test")
            return mine[0]
    raise AssertionError(f"no {TOPIC} task for {instance_id}")


def router(fail: bool) -> Router:
    routes = Router()

    @routes.task(TOPIC, reply=MESSAGE, retries=0)
    async def handle(task: Task) -> dict[str, object]:
        if fail:
            raise RuntimeError("the disk is full")
        return {"answer": CANARY_RESULT}

    return routes


async def run_worker_once(engine: Engine, journal: Path, *, fail: bool) -> None:
    settings = settings_for(engine, journal)
    async with Worker(router(fail), settings, worker_id=f"w-{uuid.uuid4().hex[:6]}") as worker:
        await worker.run_once(long_poll=timedelta(seconds=2))


def catch_passages(rest: httpx.Client, instance_id: str) -> list[dict[str, Any]]:
    response = rest.get(
        "/history/activity-instance",
        params={"processInstanceId": instance_id, "activityId": CATCH},
    )
    assert response.status_code == 200, response.text
    passages: list[dict[str, Any]] = response.json()
    return passages


def finished_once(rest: httpx.Client, instance_id: str) -> bool:
    state = rest.get(f"/history/process-instance/{instance_id}").json()["state"]
    passages = catch_passages(rest, instance_id)
    return state == "COMPLETED" and len(passages) == 1 and passages[0]["endTime"] is not None


def test_failed_work_is_listed_without_values_retried_and_then_delivered(
    engine: Engine, deployed: None, rest: httpx.Client, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite3"
    instance_id = start(rest, f"fails-{uuid.uuid4().hex[:8]}")
    run(run_worker_once(engine, journal, fail=True))

    unfinished = cli(engine, "--journal", str(journal))
    assert unfinished.returncode == 0, unfinished.stderr
    assert "no unfinished jobs" in unfinished.stdout
    assert "1 failed" in unfinished.stdout

    table = cli(engine, "--journal", str(journal), "--state", "failed")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.strip().splitlines()
    assert header.split()[:5] == ["ID", "STATE", "AGE", "ATTEMPTS", "DELIVERIES"]
    assert "failed" in row.split()
    assert instance_id in row
    assert "work failed after 1 attempts" in row
    assert CANARY_VARIABLE not in table.stdout

    (job,) = jobs_json(engine, journal, "--all")
    assert job["state"] == "failed"
    assert job["process_instance_id"] == instance_id
    assert (job["attempts"], job["deliveries"], job["has_result"]) == (1, 0, False)
    assert job["error"] == "work failed after 1 attempts (RuntimeError)"  # not its text
    assert "the disk is full" not in table.stdout
    (shown,) = jobs_json(engine, journal, "--all", "--show-errors")
    assert shown["error_detail"] == "RuntimeError: the disk is full"

    retried = cli(engine, "retry", job["id"], "--journal", str(journal))
    assert retried.returncode == 0, retried.stderr
    assert f"job {job['id']}: failed -> acknowledged" in retried.stdout
    (again,) = jobs_json(engine, journal)
    assert (again["state"], again["attempts"]) == ("acknowledged", 0)

    run(run_worker_once(engine, journal, fail=False))  # resumes the job: work, then reply
    assert finished_once(rest, instance_id)
    (delivered,) = jobs_json(engine, journal, "--state", "delivered")
    assert (delivered["deliveries"], delivered["has_result"]) == (1, True)


@pytest.mark.parametrize(
    ("state", "result", "resumed_as"),
    [
        (JobState.FAILED, {"answer": CANARY_RESULT}, "done"),  # delivery failed: send again
        (JobState.DROPPED, None, "recorded"),  # completion lost: the worker checks history
    ],
)
def test_retry_resumes_where_the_job_stopped(
    engine: Engine,
    deployed: None,
    rest: httpx.Client,
    tmp_path: Path,
    state: JobState,
    result: dict[str, object] | None,
    resumed_as: str,
) -> None:
    journal = tmp_path / "journal.sqlite3"
    instance_id = start(rest, f"retry-{state.value}-{uuid.uuid4().hex[:8]}")

    async def set_up() -> str:
        async with EngineClient(settings_for(engine)) as client:
            task = await fetch_and_complete(client, instance_id)
        store = SqliteJournal(journal, owner="gone-worker")
        try:
            job = Job(task=task, message=MESSAGE, state=state, result=result, error="earlier")
            await store.record(job)
        finally:
            await store.close()
        return job.id

    job_id = run(set_up())
    retried = cli(engine, "--journal", str(journal), "retry", job_id)  # group-level --journal
    assert retried.returncode == 0, retried.stderr
    assert f"{state.value} -> {resumed_as}" in retried.stdout

    run(run_worker_once(engine, journal, fail=False))  # another worker id: the lease is free
    assert finished_once(rest, instance_id)
    (job,) = jobs_json(engine, journal, "--all")
    assert job["state"] == "delivered"


def test_orphans_are_the_waiting_instances_no_journal_knows(
    engine: Engine, deployed: None, rest: httpx.Client, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite3"
    orphan_key = f"orphan-{uuid.uuid4().hex[:8]}"
    orphan_id = start(rest, orphan_key)
    known_id = start(rest, f"known-{uuid.uuid4().hex[:8]}")

    async def set_up() -> str:
        async with EngineClient(settings_for(engine)) as client:
            await fetch_and_complete(client, orphan_id)
            known = await fetch_and_complete(client, known_id)
        store = SqliteJournal(journal, owner="busy-worker")
        try:
            job = Job(task=known, message=MESSAGE, state=JobState.ACKNOWLEDGED)
            await store.record(job)
        finally:
            await store.close()
        return job.id

    known_job = run(set_up())
    listed = cli(engine, "--journal", str(journal), "--orphans", "--min-age", "0", "--json")
    assert listed.returncode == 0, listed.stderr
    found = {orphan["process_instance_id"]: orphan for orphan in json.loads(listed.stdout)}
    assert known_id not in found
    assert found[orphan_id] == {
        "process_instance_id": orphan_id,
        "execution_id": found[orphan_id]["execution_id"],
        "business_key": orphan_key,
        "message": MESSAGE,  # from the journal's jobs, beside the default sample_response
        "activity_id": CATCH,
        "waiting_since": found[orphan_id]["waiting_since"],
    }
    assert found[orphan_id]["waiting_since"] is not None

    table = cli(engine, "--journal", str(journal), "--orphans", "--min-age", "0")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["INSTANCE", "EXECUTION", "MESSAGE"]
    assert any(
        line.startswith(orphan_id) and orphan_key in line for line in table.stdout.splitlines()
    )

    young = cli(engine, "--journal", str(journal), "--orphans", "--message", MESSAGE)
    assert young.returncode == 0, young.stderr
    assert young.stdout.startswith("no orphans: every execution waiting over 60 s for ")
    assert MESSAGE in young.stdout  # the default minute: this one waits for less

    # Cancelling the known job makes its instance an orphan too.
    asked = cli(engine, "cancel", known_job, "--journal", str(journal), input="n\n")
    assert asked.returncode == 1
    assert "No worker will send" in asked.stdout
    assert len(jobs_json(engine, journal)) == 1
    cancelled = cli(engine, "cancel", known_job, "--journal", str(journal), "--yes")
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {known_job} deleted" in cancelled.stdout
    assert jobs_json(engine, journal, "--all") == []
    # The journal no longer names the message: it is given.
    after = cli(
        engine,
        "--journal",
        str(journal),
        "--orphans",
        "--message",
        MESSAGE,
        "--min-age",
        "0",
        "--json",
    )
    assert after.returncode == 0, after.stderr
    assert known_id in {orphan["process_instance_id"] for orphan in json.loads(after.stdout)}


def test_mistakes_are_one_line(engine: Engine, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.sqlite3"
    assert one_error_line(cli(engine, "--journal", str(missing))) == (
        f"Error: no journal at {missing} (give --journal PATH_OR_URL or set CAMUNDA_JOURNAL)"
    )
    assert not missing.exists()  # looking does not create one
    via_env = cli(engine, "retry", "x", CAMUNDA_JOURNAL=str(missing))
    assert one_error_line(via_env).startswith(f"Error: no journal at {missing}")
    assert one_error_line(cli(engine, "--journal", ":memory:")).startswith(
        "Error: the journal is ':memory:'"
    )

    journal = tmp_path / "journal.sqlite3"

    async def set_up() -> None:
        store = SqliteJournal(journal, owner="w")
        try:
            task = Task(id="t-1", topic=TOPIC, worker_id="w", process_instance_id="pi-1")
            await store.record(Job(task=task, message=MESSAGE, state=JobState.DONE))
        finally:
            await store.close()

    run(set_up())
    for command in (["retry"], ["cancel", "--yes"]):
        result = cli(engine, *command, "nope", "--journal", str(journal))
        assert one_error_line(result) == f"Error: no job nope in {journal}"
    busy = cli(engine, "retry", "t-1", "--journal", str(journal))
    assert one_error_line(busy) == (
        "Error: job t-1 is done: only failed or dropped jobs can be retried"
    )
    bad_state = cli(engine, "--journal", str(journal), "--state", "lost")
    assert bad_state.returncode == 2
    not_a_journal = tmp_path / "text.sqlite3"
    not_a_journal.write_text("hello")
    assert one_error_line(cli(engine, "--journal", str(not_a_journal))).startswith(
        f"Error: SQLite journal {not_a_journal} is damaged or not a journal"
    )


@pytest.mark.postgres
def test_a_postgres_journal_is_listed_and_retried(postgres_server: pg.PostgresServer) -> None:
    from camunda_relay.journal.postgres import PostgresJournal

    name = f"pending_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(name)
    url = f"postgresql://{pg.USER}:{pg.PASSWORD}@127.0.0.1:{postgres_server.port}/{name}"

    async def set_up() -> None:
        store = PostgresJournal(url, owner="gone-worker")
        try:
            for number, state in enumerate([JobState.DELIVERED, JobState.FAILED]):
                task = Task(
                    id=f"t-{number}", topic=TOPIC, worker_id="w", process_instance_id=f"pi-{number}"
                )
                await store.record(Job(task=task, message=MESSAGE, state=state, error="boom"))
        finally:
            await store.close()

    run(set_up())
    listed = cli(None, "--journal", url, "--all", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {job["id"]: job["state"] for job in json.loads(listed.stdout)} == {
        "t-0": "delivered",
        "t-1": "failed",
    }
    retried = cli(None, "--journal", url, "retry", "t-1")
    assert retried.returncode == 0, retried.stderr
    assert "failed -> acknowledged" in retried.stdout
    unknown = cli(None, "--journal", url, "cancel", "t-9", "--yes")
    shown = url.replace(f":{pg.PASSWORD}@", ":***@")
    assert one_error_line(unknown) == f"Error: no job t-9 in {shown}"
    unreachable = url.replace(str(postgres_server.port), "1")
    refused = one_error_line(cli(None, "--journal", unreachable))
    assert refused.startswith("Error: cannot use the journal postgresql://relay:***@127.0.0.1:1/")
    for result in (listed, retried, unknown):
        assert pg.PASSWORD not in result.stdout + result.stderr
    assert pg.PASSWORD not in refused


def test_the_reconciler_raises_one_incident_per_orphan_on_the_real_engine(
    engine: Engine, deployed: None, rest: httpx.Client
) -> None:
    """The sweep the worker runs, against Camunda: an orphan gets one incident of type
    camundaRelay on its waiting execution; an instance whose job was delivered does not."""
    from camunda_relay.journal import MemoryJournal
    from camunda_relay.replies.reconciler import Reconciler

    orphan_id = start(rest, f"swept-{uuid.uuid4().hex[:8]}")
    answered_id = start(rest, f"answered-{uuid.uuid4().hex[:8]}")
    journal = MemoryJournal()

    async def scenario() -> list[list[str]]:
        async with EngineClient(settings_for(engine)) as client:
            await fetch_and_complete(client, orphan_id)
            answered = await fetch_and_complete(client, answered_id)
            # Its reply counts as sent although the instance still waits (a journal that
            # says delivered is believed: no incident).
            await journal.record(Job(task=answered, message=MESSAGE, state=JobState.DELIVERED))
            reconciler = Reconciler(
                client, journal, [MESSAGE], action="incident", min_age=timedelta(0)
            )
            return [
                [orphan.process_instance_id for orphan in await reconciler.sweep()]
                for _ in range(2)
            ]

    first, second = run(scenario())
    assert orphan_id in first
    assert answered_id not in first
    assert orphan_id not in second
    incidents = rest.get(
        "/incident", params={"processInstanceId": orphan_id, "incidentType": "camundaRelay"}
    ).json()
    assert len(incidents) == 1
    assert incidents[0]["activityId"] == CATCH
    assert incidents[0]["incidentMessage"].startswith(
        "no worker journal knows the reply owed to this instance"
    )
    none = rest.get("/incident", params={"processInstanceId": answered_id}).json()
    assert none == []


def test_a_worker_with_reconcile_resume_reruns_an_orphan_and_delivers_once(
    engine: Engine, deployed: None, rest: httpx.Client
) -> None:
    """The journal entry is gone (a lost volume): the worker rebuilds the job from Camunda's
    external task log and the instance's variables, re-runs the work, and the instance
    passes its catch event once."""
    orphan_id = start(rest, f"resumed-{uuid.uuid4().hex[:8]}")
    seen: dict[str, Task] = {}
    routes = Router()

    @routes.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        seen[task.process_instance_id] = task
        return {"answer": CANARY_RESULT}

    settings = dataclasses.replace(
        settings_for(engine), reconcile="resume", reconcile_min_age=timedelta(0)
    )

    async def scenario() -> Task:
        async with EngineClient(settings) as client:
            lost = await fetch_and_complete(client, orphan_id)
        async with Worker(routes, settings) as worker:
            assert worker.reconciler is not None
            await worker.reconciler.sweep()
            await worker.drain()
            assert orphan_id not in {
                orphan.process_instance_id for orphan in await worker.reconciler.sweep()
            }
            assert worker.stats.replies_delivered >= 1
        return lost

    lost = run(scenario())
    assert finished_once(rest, orphan_id)
    task = seen[orphan_id]
    assert task.job_id == lost.id, "the handler's idempotency key is the lost job's"
    assert task.variables["secret"] == CANARY_VARIABLE
    assert task.business_key == lost.business_key
    answer = rest.get(
        "/history/variable-instance",
        params={"processInstanceId": orphan_id, "variableName": "answer"},
    ).json()
    assert [variable["value"] for variable in answer] == [CANARY_RESULT]
