"""camunda_relay.testing: running handlers once, and the fake engine shipped to users."""

from __future__ import annotations

import asyncio

import pytest

import tests.support.fake_engine as support_fake
from camunda_relay import (
    BpmnError,
    Complete,
    ConfigurationError,
    DeferReply,
    Reply,
    Router,
    Task,
    testing,
)
from camunda_relay.testing import fake_engine, make_task, run_handlers, run_handlers_sync


def router() -> Router:
    router = Router()

    @router.task("check")
    def check(task: Task) -> dict[str, object]:  # a sync handler: on a thread
        if task.variables["amount"] > 100:
            raise BpmnError("TOO_MUCH", "over the limit", {"limit": 100})
        if task.variables["amount"] < 0:
            raise ValueError("negative")
        return {"approved": True}

    @router.task("send", reply=Reply("sample_response", complete_variables={"sent": True}))
    async def send(task: Task) -> dict[str, object]:
        if task.variables.get("later"):
            assert task.reply_token is not None
            raise DeferReply
        if task.variables.get("bpmn"):
            raise BpmnError("NOT_HERE")
        return {"var1": 1, "for": task.business_key}

    @router.task("odd")
    async def odd(task: Task) -> object:
        return [1, 2]

    return router


def test_each_outcome_is_told_apart() -> None:
    tasks = [
        make_task("check", {"amount": 5}),
        make_task("check", {"amount": 500}),
        make_task("check", {"amount": -1}),
        make_task("send", {}, business_key="order-7"),
        make_task("send", {"later": True}),
        make_task("send", {"bpmn": True}),
        make_task("odd"),
    ]
    completed, threw, failed, replied, deferred, no_bpmn, odd = run_handlers_sync(router(), tasks)

    assert (completed.kind, completed.variables) == ("completed", {"approved": True})
    assert threw.kind == "bpmn_error"
    assert threw.bpmn_error is not None
    assert (threw.bpmn_error.code, threw.bpmn_error.variables) == ("TOO_MUCH", {"limit": 100})
    assert failed.kind == "failed"
    assert isinstance(failed.error, ValueError)
    assert replied.kind == "replied"
    assert replied.message == "sample_response"
    assert replied.variables == {"var1": 1, "for": "order-7"}
    assert replied.complete_variables == {"sent": True}
    assert deferred.kind == "deferred"
    assert deferred.reply_token
    assert deferred.reply_token not in repr(deferred)
    assert no_bpmn.kind == "failed", "a reply topic's task is completed: no BPMN error"
    assert odd.kind == "failed"
    assert isinstance(odd.error, TypeError)


def test_local_variables_are_told_as_the_worker_sends_them() -> None:
    """A plain topic's ``Complete`` completes (as on the worker) with its local variables; a
    reply topic's ``complete_local_variables`` are told beside its ``complete_variables``,
    and a reply handler returning a Complete fails, as on the worker."""
    router = Router()

    @router.task("plain")
    def plain(task: Task) -> Complete:
        return Complete(variables={"result": 1}, local_variables={"note": "here"})

    reply = Reply("done", complete_local_variables=lambda task: {"seen": task.business_key})

    @router.task("reply", reply=reply)
    def replying(task: Task) -> dict[str, object]:
        return {"answer": 2}

    @router.task("wrong", reply="done")
    def wrong(task: Task) -> Complete:
        return Complete(variables={"x": 1})

    tasks = [make_task("plain"), make_task("reply", business_key="o-1"), make_task("wrong")]
    completed, replied, refused = run_handlers_sync(router, tasks)
    assert completed.kind == "completed"
    assert (completed.variables, completed.local_variables) == ({"result": 1}, {"note": "here"})
    assert replied.kind == "replied"
    assert replied.complete_variables == {}
    assert replied.complete_local_variables == {"seen": "o-1"}
    assert refused.kind == "failed"
    assert isinstance(refused.error, TypeError)


def test_each_attempt_gets_its_own_token_and_every_task_its_own_ids() -> None:
    one, two = run_handlers_sync(router(), [make_task("send", {"later": True})] * 2)
    assert one.reply_token != two.reply_token
    assert make_task("send").id != make_task("send").id


def test_a_topic_the_router_does_not_serve_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no handler for topic 'nope'"):
        asyncio.run(run_handlers(router(), [make_task("nope")]))


def test_the_suite_uses_the_fake_engine_users_get() -> None:
    assert support_fake.FakeEngine is testing.FakeEngine is fake_engine.FakeEngine
    assert support_fake.Fault is testing.Fault
    assert 'id="correlation-message"' in support_fake.SEED_BPMN
