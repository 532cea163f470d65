"""The compat worker's error paths against the in-process fake engine: what a client-style
handler's failure, missing result and reply-topic result send; the extension properties'
way through the fetch and the journal; stop() from another thread."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from typing import Any

import httpx

from camunda_relay import EngineClient, Settings, Task, Worker
from camunda_relay.client import TopicRequest
from camunda_relay.compat import ExternalTask, ExternalTaskWorker, TaskResult
from camunda_relay.journal import codec
from camunda_relay.replies.job import Job
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine

SETTINGS = Settings(
    url="http://fake-engine/engine-rest",
    retry_timeout=timedelta(milliseconds=10),
    shutdown_grace=timedelta(seconds=2),
    journal=":memory:",
)


def run(fake: FakeEngine, compat: ExternalTaskWorker, **subscribe: Any) -> list[dict[str, Any]]:
    """Run once what ``subscribe`` would run; the bodies of the requests sent."""
    bodies: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> httpx.Response:
        if request.content:
            bodies.append({"path": request.url.path, **json.loads(request.content)})
        return await fake.handle(request)

    async def scenario() -> None:
        router = compat.router(TOPIC, **subscribe)
        client = EngineClient(SETTINGS, transport=httpx.MockTransport(record))
        async with Worker(router, SETTINGS, client=client) as worker:
            await worker.run_once()

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    return bodies


def sent(bodies: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    """The bodies sent to ``action`` (messages: the reply's, not the Json probe's)."""
    found = [body for body in bodies if body["path"].endswith(action)]
    return [body for body in found if body.get("messageName", MESSAGE) == MESSAGE]


def test_failure_sends_the_clients_retries_timeout_and_details() -> None:
    fake = FakeEngine()
    fake.start("bk-1")

    def handle(task: ExternalTask) -> TaskResult:
        return task.failure("task failed", "failed task details", 3, 5000)

    (body,) = sent(run(fake, ExternalTaskWorker("1", environ={}), action=handle), "/failure")
    assert (body["retries"], body["retryTimeout"]) == (3, 5000)
    assert body["errorDetails"] == "failed task details"
    assert body["errorMessage"].endswith("task failed")


def test_a_handler_without_a_result_is_a_reported_failure() -> None:
    fake = FakeEngine()
    fake.start("bk-2")

    def handle(task: ExternalTask) -> None:
        return None

    (body,) = sent(run(fake, ExternalTaskWorker("1", environ={}), action=handle), "/failure")
    assert body["errorMessage"].startswith("TaskResultMissing")


def test_a_result_set_on_the_task_but_not_returned_counts() -> None:
    fake = FakeEngine()
    fake.start("bk-3")

    def handle(task: ExternalTask) -> None:
        task.complete({"done": True})

    (body,) = sent(run(fake, ExternalTaskWorker("1", environ={}), action=handle), "/complete")
    assert body["variables"]["done"]["value"] is True


def test_an_async_handler_runs_too() -> None:
    fake = FakeEngine()
    fake.start("bk-4")

    async def handle(task: ExternalTask) -> TaskResult:
        await asyncio.sleep(0)
        return task.complete({"async": 1})

    (body,) = sent(run(fake, ExternalTaskWorker("1", environ={}), action=handle), "/complete")
    assert body["variables"]["async"]["value"] == 1


def test_a_reply_topic_sends_the_completions_variables_with_the_message() -> None:
    fake = FakeEngine()
    fake.start("bk-5")

    def handle(task: ExternalTask) -> TaskResult:
        return task.complete({"var1": 1, "var2": "value"})

    bodies = run(fake, ExternalTaskWorker("1", environ={}), action=handle, reply=MESSAGE)
    (completion,) = sent(bodies, "/complete")
    (message,) = sent(bodies, "/message")
    assert "variables" not in completion  # completed before the handler ran
    assert message["messageName"] == MESSAGE
    assert {k: v["value"] for k, v in message["processVariables"].items()} == {
        "var1": 1,
        "var2": "value",
    }


def test_a_reply_topic_refuses_local_variables_as_a_failure() -> None:
    fake = FakeEngine()
    fake.start("bk-6")

    def handle(task: ExternalTask) -> TaskResult:
        return task.complete({"var1": 1}, {"local": 1})

    bodies = run(fake, ExternalTaskWorker("1", environ={}), action=handle, reply=MESSAGE)
    assert sent(bodies, "/message") == []


def test_extension_properties_are_asked_for_only_when_wanted() -> None:
    topic = TopicRequest(topic="t", lock_duration=timedelta(seconds=1))
    assert "includeExtensionProperties" not in topic.body()
    wanted = TopicRequest(topic="t", lock_duration=timedelta(seconds=1), extension_properties=True)
    assert wanted.body()["includeExtensionProperties"] is True


def test_extension_properties_survive_the_journal() -> None:
    task = Task(
        id="t", topic="x", worker_id="w", process_instance_id="p", extension_properties={"a": "b"}
    )
    job = codec.from_payload(codec.to_payload(Job(task=task, message="m")))
    assert dict(job.task.extension_properties) == {"a": "b"}
    old = codec.to_payload(
        Job(task=Task(id="t", topic="x", worker_id="w", process_instance_id="p"), message="m")
    )
    del old["task"]["extension_properties"]  # type: ignore[attr-defined]  # written before
    assert dict(codec.from_payload(old).task.extension_properties) == {}


def test_stop_from_another_thread_ends_subscribe() -> None:
    fake = FakeEngine()
    compat = ExternalTaskWorker("1", environ={"CAMUNDA_URL": SETTINGS.url})
    ended = threading.Event()
    original = compat._worker_for

    def on_fake(router: Any) -> Worker:
        client = EngineClient(compat.settings, transport=httpx.MockTransport(fake.handle))
        worker = original(router)
        return Worker(router, worker.settings, client=client, journal=worker.journal)

    compat._worker_for = on_fake  # type: ignore[method-assign]

    def subscribe() -> None:
        compat.subscribe(TOPIC, lambda task: task.complete())
        ended.set()

    thread = threading.Thread(target=subscribe, daemon=True)
    thread.start()
    compat.stop()
    assert ended.wait(30)
