"""A plain handler returning :class:`Complete` sets local variables on completion (sent as
``localVariables``); a reply topic's handler may not return one (its task is already done)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from camunda_relay import (
    Complete,
    ConfigurationError,
    EngineClient,
    Reply,
    Router,
    Settings,
    Task,
    Worker,
)
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine

SETTINGS = Settings(
    url="http://fake-engine/engine-rest",
    retry_timeout=timedelta(milliseconds=10),
    retries=1,
    shutdown_grace=timedelta(seconds=2),
    journal=":memory:",
)


def completions(fake: FakeEngine, router: Router) -> list[dict[str, Any]]:
    """Run the worker once; the bodies of its complete calls."""
    bodies: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/complete"):
            bodies.append(json.loads(request.content))
        return await fake.handle(request)

    async def scenario() -> None:
        client = EngineClient(SETTINGS, transport=httpx.MockTransport(record))
        async with Worker(router, SETTINGS, client=client) as worker:
            await worker.run_once()

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    return bodies


def test_complete_sends_process_and_local_variables() -> None:
    fake = FakeEngine()
    instance = fake.start("local-1")
    router = Router()

    @router.task(TOPIC)
    def handle(task: Task) -> Complete:
        return Complete(variables={"total": 3}, local_variables={"attempt": "first"})

    (body,) = completions(fake, router)
    sent = {name: v["value"] for name, v in body["variables"].items()}
    local = {name: (v["value"], v["type"]) for name, v in body["localVariables"].items()}
    assert sent == {"total": 3}
    assert local == {"attempt": ("first", "String")}
    assert fake.instances[instance].state != "task"


def test_a_reply_topic_returning_complete_is_an_error_not_a_completion_with_it() -> None:
    fake = FakeEngine()
    fake.start("local-2")
    router = Router()

    @router.task(TOPIC, reply=Reply(MESSAGE))
    def handle(task: Task) -> Any:
        return Complete(local_variables={"x": 1})

    for body in completions(fake, router):
        assert "localVariables" not in body


def test_a_reply_topic_completes_with_its_complete_local_variables() -> None:
    """The reply's ``complete_local_variables`` (here a function of the task) go with the
    immediate completion as ``localVariables``, beside its ``complete_variables``."""
    fake = FakeEngine()
    fake.start("local-3")
    router = Router()
    reply = Reply(
        MESSAGE,
        complete_variables={"accepted": True},
        complete_local_variables=lambda task: {"taken_by": task.worker_id},
    )

    @router.task(TOPIC, reply=reply)
    def handle(task: Task) -> dict[str, object]:
        return {"answer": 1}

    body = completions(fake, router)[0]
    assert {name: v["value"] for name, v in body["variables"].items()} == {"accepted": True}
    local = {name: v["value"] for name, v in body["localVariables"].items()}
    assert local == {"taken_by": body["workerId"]}


@pytest.mark.parametrize("name", ["complete_variables", "complete_local_variables"])
def test_reply_completion_variables_of_the_wrong_kind_are_refused_at_registration(
    name: str,
) -> None:
    with pytest.raises(ConfigurationError, match=f"reply {name} must be a mapping or a func"):
        Reply(MESSAGE, **{name: ["not", "a", "mapping"]})  # type: ignore[arg-type]
