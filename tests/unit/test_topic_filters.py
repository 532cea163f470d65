"""Per-topic fetch filters: checked at registration, sent in fetchAndLock's topic body."""

from __future__ import annotations

from datetime import timedelta

import pytest

from camunda_relay import Router
from camunda_relay.client import TopicRequest
from camunda_relay.errors import ConfigurationError
from camunda_relay.task import Task


def _handler(task: Task) -> None:
    return None


def test_filters_become_the_topic_body_of_fetch_and_lock() -> None:
    router = Router()
    router.task(
        "t",
        tenant_ids=["a", "b"],
        process_definition_keys=["k"],
        process_definition_ids=["k:1:x"],
        process_definition_version_tag="v1",
        business_key="bk",
        process_variables={"region": "eu", "n": 3, "ok": True},
        local_variables=True,
    )(_handler)
    registration = router["t"]
    topic = TopicRequest(
        "t",
        lock_duration=timedelta(seconds=5),
        local_variables=registration.local_variables,
        filters=registration.filters,
    )
    assert topic.body() == {
        "topicName": "t",
        "lockDuration": 5000,
        "localVariables": True,
        "deserializeValues": False,
        "tenantIdIn": ["a", "b"],
        "processDefinitionIdIn": ["k:1:x"],
        "processDefinitionKeyIn": ["k"],
        "processDefinitionVersionTag": "v1",
        "businessKey": "bk",
        "processVariables": {"region": "eu", "n": 3, "ok": True},
    }


def test_without_tenant_id_and_no_filters() -> None:
    router = Router()
    router.task("plain")(_handler)
    router.task("untenanted", without_tenant_id=True)(_handler)
    assert router["plain"].filters is None
    assert router["untenanted"].filters is not None
    assert router["untenanted"].filters.body() == {"withoutTenantId": True}


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"tenant_ids": "a"}, "tenant_ids must be a list"),
        ({"tenant_ids": []}, "tenant_ids must be a non-empty list"),
        ({"tenant_ids": ["a"], "without_tenant_id": True}, "exclude each other"),
        ({"process_definition_keys": [""]}, "process_definition_keys"),
        ({"business_key": ""}, "business_key must be"),
        ({"business_key": "x" * 256}, "255"),
        ({"process_variables": {"x": None}}, "process_variables['x']"),
        ({"process_variables": {"x": [1]}}, "by equality"),
        ({"local_variables": "yes"}, "local_variables"),
    ],
)
def test_unusable_filters_are_refused_at_registration(
    options: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        Router().task("t", **options)  # type: ignore[arg-type]
