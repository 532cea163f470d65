"""The seed process on the real engine: the conception's flow, driven over REST."""

from __future__ import annotations

import uuid

import httpx

from tests.support.engine import (
    CATCH_EVENT,
    PROCESS_KEY,
    assert_finished_once,
    run_seed_flow,
)


def test_seed_process_is_deployed_once_with_readable_ids(rest: httpx.Client) -> None:
    params = {"key": PROCESS_KEY, "withoutTenantId": "true"}  # tests deploy tenants' copies
    definitions = rest.get("/process-definition", params=params).json()
    assert [(d["name"], d["version"]) for d in definitions] == [("Correlation Message", 1)]
    assert definitions[0]["historyTimeToLive"] is not None
    xml = rest.get(f"/process-definition/{definitions[0]['id']}/xml").json()["bpmn20Xml"]
    for fragment in (
        'camunda:topic="messageSending"',
        'name="sample_response"',
        f'id="{CATCH_EVENT}"',
        'id="send_message"',
    ):
        assert fragment in xml


def test_seed_flow_finishes_after_correlation_by_business_key(rest: httpx.Client) -> None:
    business_key = f"order-{uuid.uuid4()}"
    instance_id = run_seed_flow(rest, business_key)
    assert_finished_once(rest, instance_id)


def test_correlating_before_anyone_waits_is_rejected_not_buffered(rest: httpx.Client) -> None:
    """Camunda 7 does not keep early messages: the worker must retry, not fire and forget."""
    response = rest.post(
        "/message", json={"messageName": "sample_response", "businessKey": f"nobody-{uuid.uuid4()}"}
    )
    assert response.status_code == 400
    assert response.json()["type"] == "RestException"
    assert "No process definition or execution matches" in response.json()["message"]
