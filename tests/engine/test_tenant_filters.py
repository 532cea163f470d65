"""Per-topic tenant filters on the real engine: the seed process deployed for two tenants,
each fetch limited to one of them gets that tenant's tasks only, and a reply by process
instance id (with the business key) reaches the instance of its own tenant."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import httpx

from camunda_relay.client import TopicRequest
from camunda_relay.filters import TopicFilter
from tests.support.engine import WORKER_USER, Engine

BPMN = Path(__file__).parents[2] / "engine/src/main/resources/processes/correlation-message.bpmn"
TOPIC = "messageSending"


def _deploy(rest: httpx.Client, tenant: str) -> None:
    response = rest.post(
        "/deployment/create",
        data={"deployment-name": f"tenant-{tenant}", "tenant-id": tenant},
        files={"correlation-message.bpmn": ("correlation-message.bpmn", BPMN.read_bytes())},
    )
    assert response.status_code == 200, response.text


def _start(rest: httpx.Client, tenant: str, business_key: str) -> str:
    path = f"/process-definition/key/correlation-message/tenant-id/{tenant}/start"
    response = rest.post(path, json={"businessKey": business_key})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _fetch(rest: httpx.Client, worker: str, tenant: str, key: str) -> list[dict[str, object]]:
    topic = TopicRequest(
        TOPIC,
        lock_duration=timedelta(minutes=1),
        filters=TopicFilter.of(tenant_ids=[tenant], business_key=key),
    )
    body = {"workerId": worker, "maxTasks": 10, "topics": [topic.body()]}
    response = rest.post("/external-task/fetchAndLock", json=body)
    assert response.status_code == 200, response.text
    tasks: list[dict[str, object]] = response.json()
    return tasks


def test_each_tenant_filter_gets_its_own_tenants_task_and_reply(rest: httpx.Client) -> None:
    suffix = uuid.uuid4().hex[:8]
    tenants = [f"ta-{suffix}", f"tb-{suffix}"]
    key = f"same-{suffix}"  # the same business key in both tenants
    instances = {}
    for tenant in tenants:
        _deploy(rest, tenant)
        instances[tenant] = _start(rest, tenant, key)
    for tenant in tenants:
        (task,) = _fetch(rest, f"w-{tenant}", tenant, key)
        assert task["tenantId"] == tenant
        assert task["processInstanceId"] == instances[tenant]
        done = rest.post(f"/external-task/{task['id']}/complete", json={"workerId": f"w-{tenant}"})
        assert done.status_code == 204, done.text
    # The engine refuses a tenant id beside a process instance id: the instance pins it.
    refused = rest.post(
        "/message",
        json={
            "messageName": "sample_response",
            "processInstanceId": instances[tenants[0]],
            "tenantId": tenants[0],
        },
    )
    assert refused.status_code == 400, refused.text
    # By business key alone the two tenants' instances are ambiguous; by instance id (with
    # the business key, as by_business_key sends it) each reply reaches its own tenant.
    ambiguous = rest.post("/message", json={"messageName": "sample_response", "businessKey": key})
    assert ambiguous.status_code == 400
    for tenant in tenants:
        body = {
            "messageName": "sample_response",
            "processInstanceId": instances[tenant],
            "businessKey": key,
            "processVariables": {"tenant": {"value": tenant, "type": "String"}},
        }
        sent = rest.post("/message", json=body)
        assert sent.status_code == 204, sent.text
    for tenant in tenants:
        history = rest.get(f"/history/process-instance/{instances[tenant]}").json()
        assert history["state"] == "COMPLETED"
        assert history["tenantId"] == tenant
        variable = rest.get(
            "/history/variable-instance",
            params={"processInstanceId": instances[tenant], "variableName": "tenant"},
        ).json()
        assert [v["value"] for v in variable] == [tenant]


def test_the_worker_user_sees_no_tenant_it_is_not_a_member_of(
    engine: Engine, rest: httpx.Client
) -> None:
    """Under authorizations the engine's tenant check hides other tenants' tasks: the
    worker user (a member of no tenant) fetches nothing of a tenant's deployment."""
    tenant = f"tw-{uuid.uuid4().hex[:8]}"
    key = f"worker-{tenant}"
    _deploy(rest, tenant)
    instance = _start(rest, tenant, key)
    auth = httpx.BasicAuth(WORKER_USER, engine.worker_password)
    with httpx.Client(base_url=engine.rest_url, timeout=30, auth=auth) as worker:
        assert _fetch(worker, "w-rights", tenant, key) == []
    (task,) = _fetch(rest, "w-admin", tenant, key)  # the administrator sees it
    assert task["processInstanceId"] == instance
