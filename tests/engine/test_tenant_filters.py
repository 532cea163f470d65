"""Per-topic tenant filters on the real engine: the seed process deployed for two tenants,
each fetch limited to one of them gets that tenant's tasks only, and a reply by process
instance id (with the business key) reaches the instance of its own tenant. The worker user
sees a tenant's tasks only when ``CAMUNDA_WORKER_TENANTS`` names it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from camunda_relay import bundled_engine
from camunda_relay.client import TopicRequest
from camunda_relay.filters import TopicFilter
from tests.support.engine import WORKER_USER, Engine, start_engine
from tests.support.tools import free_port

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


SERVED, OTHER = "relaytenanta", "relaytenantb"


@pytest.fixture(scope="module")
def tenant_engine(engine_jar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An engine started with ``CAMUNDA_WORKER_TENANTS`` naming one tenant (which does not
    exist before: the engine creates it)."""
    running = start_engine(
        engine_jar, tmp_path_factory.mktemp("tenant-engine"), free_port(), worker_tenants=(SERVED,)
    )
    yield running
    bundled_engine.stop(running.info.pid)


def test_with_worker_tenants_the_worker_user_gets_those_tenants_tasks_only(
    tenant_engine: Engine,
) -> None:
    key = f"tenants-{uuid.uuid4().hex[:8]}"
    with tenant_engine.client() as admin, tenant_engine.worker_client() as worker:
        instances = {}
        for tenant in (SERVED, OTHER):
            _deploy(admin, tenant)
            instances[tenant] = _start(admin, tenant, key)
        assert _fetch(worker, "w-other", OTHER, key) == []
        (task,) = _fetch(worker, "w-served", SERVED, key)
        assert task["tenantId"] == SERVED
        assert task["processInstanceId"] == instances[SERVED]
        # The membership is the worker group's (so bearer-token users in it have it too).
        tenants = admin.get("/tenant", params={"groupMember": "relayworkers"})
        assert [t["id"] for t in tenants.json()] == [SERVED]
        assert admin.get("/tenant", params={"userMember": WORKER_USER}).json() == []
        (other,) = _fetch(admin, "w-admin", OTHER, key)  # the administrator sees both
        assert other["processInstanceId"] == instances[OTHER]


def _group_tenants(admin: httpx.Client) -> list[str]:
    response = admin.get("/tenant", params={"groupMember": "relayworkers"})
    assert response.status_code == 200, response.text
    return sorted(tenant["id"] for tenant in response.json())


def test_worker_tenants_unset_leaves_the_groups_memberships_alone(
    engine_jar: Path, tmp_path: Path
) -> None:
    """A membership an administrator gave the worker group by hand survives a restart without
    ``CAMUNDA_WORKER_TENANTS``; set, the group is a member of exactly the tenants named."""
    state = tmp_path / "engine"

    def restarted(tenants: tuple[str, ...]) -> Engine:
        return start_engine(engine_jar, state, free_port(), worker_tenants=tenants)

    running = restarted(())
    try:
        with running.client() as admin:
            created = admin.post("/tenant/create", json={"id": "byhand", "name": "by hand"})
            assert created.status_code == 204, created.text
            joined = admin.put("/tenant/byhand/group-members/relayworkers")
            assert joined.status_code == 204, joined.text
    finally:
        bundled_engine.stop(running.info.pid)
    running = restarted(())
    try:
        with running.client() as admin:
            assert _group_tenants(admin) == ["byhand"]
    finally:
        bundled_engine.stop(running.info.pid)
    running = restarted(("tenantb",))
    try:
        with running.client() as admin:
            assert _group_tenants(admin) == ["tenantb"]
    finally:
        bundled_engine.stop(running.info.pid)
