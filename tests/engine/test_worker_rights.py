"""The least-privilege worker user: it runs the conception's worker and the demo, and it
cannot administer the engine (deploy, manage users, groups or authorizations, delete or
start instances). The reconciler and ``pending`` as that user: tests/engine/test_pending.py."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from camunda_relay import EngineClient, Settings
from camunda_relay.examples.conception import make_router
from tests.support.engine import (
    PASSWORD,
    USER,
    WORKER_USER,
    Engine,
    assert_finished_once,
    start_instance,
    wait_for,
    work_until_finished,
)
from tests.support.tools import run_cli

OWN = "<the worker's own password>"
MODEL = Path(__file__).parents[2] / "engine/src/main/resources/processes/correlation-message.bpmn"


def _as_worker(engine: Engine, **extra: str) -> dict[str, str]:
    return {
        "CAMUNDA_URL": engine.rest_url,
        "CAMUNDA_USER": WORKER_USER,
        "CAMUNDA_PASSWORD": engine.worker_password,
        **extra,
    }


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_the_worker_password_is_kept_private_and_stable(engine: Engine) -> None:
    path = engine.options.state_dir / "worker-password"
    assert path.stat().st_mode & 0o777 == 0o600
    assert engine.worker_password == path.read_text().strip()
    assert len(engine.worker_password) >= 24


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/user/create", {"profile": {"id": "mallory"}, "credentials": {"password": "m"}}),
        ("PUT", f"/user/{USER}/credentials", {"password": "x", "authenticatedUserPassword": OWN}),
        ("PUT", f"/group/camunda-admin/members/{WORKER_USER}", None),
        ("POST", "/group/create", {"id": "mallorys", "name": "m"}),
        ("POST", "/tenant/create", {"id": "mallorys", "name": "m"}),
        ("POST", "/authorization/create", {"type": 1, "permissions": ["ALL"], "userId": "x",
                                           "resourceType": 6, "resourceId": "*"}),
        ("PUT", f"/user/{WORKER_USER}/credentials", {"password": "new-pass-1",
                                                     "authenticatedUserPassword": OWN}),
    ],
    ids=["create-user", "admin-password", "join-admins", "create-group", "create-tenant",
         "grant-itself", "own-password"],
)  # fmt: skip
def test_the_worker_user_cannot_administer(
    engine: Engine, method: str, path: str, body: dict[str, Any] | None
) -> None:
    if body and body.get("authenticatedUserPassword") == OWN:
        # The right one: a wrong one would count as a failed login of the worker user.
        body = {**body, "authenticatedUserPassword": engine.worker_password}
    with engine.worker_client() as worker:
        response = worker.request(method, path, json=body)
    if path == f"/user/{USER}/credentials":  # to this user, the administrator does not exist
        assert response.status_code == 404, response.text
        return
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "AuthorizationException"


def test_the_worker_user_sees_no_other_user(engine: Engine) -> None:
    with engine.worker_client() as worker:
        users = worker.get("/user")
        admin = worker.get(f"/user/{USER}/profile")
        authorizations = worker.get("/authorization")
    assert users.status_code == 200
    assert [user["id"] for user in users.json()] == [WORKER_USER]
    assert admin.status_code == 404  # to this user, the administrator does not exist
    assert authorizations.json() == []


def test_the_worker_user_cannot_deploy_start_or_delete(engine: Engine, rest: httpx.Client) -> None:
    instance_id = start_instance(rest, f"rights-{uuid.uuid4().hex[:8]}")
    with engine.worker_client() as worker:
        deployed = worker.post(
            "/deployment/create",
            data={"deployment-name": "mallory"},
            files={"model.bpmn": ("model.bpmn", MODEL.read_bytes(), "application/octet-stream")},
        )
        started = worker.post("/process-definition/key/correlation-message/start", json={})
        deleted = worker.delete(f"/process-instance/{instance_id}")
    assert deployed.status_code == 403, deployed.text
    assert started.status_code == 403, started.text
    assert deleted.status_code == 403, deleted.text
    assert rest.get(f"/process-instance/{instance_id}").status_code == 200


def test_cli_deploy_as_the_worker_says_it_needs_deployment_rights(engine: Engine) -> None:
    line = _one_line(run_cli("deploy", str(MODEL), env=_as_worker(engine)))
    assert line == (
        f"Error: user {WORKER_USER!r} may not deploy: deploying needs a user with deployment "
        "rights (CREATE on Deployment), such as the administrator"
    )


def test_cli_start_as_the_worker_is_refused_and_as_the_administrator_works(engine: Engine) -> None:
    key = f"rights-{uuid.uuid4().hex[:8]}"
    refused = _one_line(
        run_cli("start", "correlation-message", "--business-key", key, env=_as_worker(engine))
    )
    assert refused.startswith(f"Error: user {WORKER_USER!r} may not start 'correlation-message'")
    admin = {"CAMUNDA_URL": engine.rest_url, "CAMUNDA_USER": USER, "CAMUNDA_PASSWORD": PASSWORD}
    started = run_cli("start", "correlation-message", "--business-key", key, env=admin)
    assert started.returncode == 0, started.stderr
    # ... and the worker may correlate (nobody waits yet: the engine's 400, not a 403)
    early = _one_line(
        run_cli("correlate", "sample_response", "--business-key", key, env=_as_worker(engine))
    )
    assert "is waiting for message 'sample_response'" in early


def test_the_conception_worker_runs_as_the_worker_user(engine: Engine, rest: httpx.Client) -> None:
    """The seed flow, all worker calls as the worker user: fetch and lock, complete, the
    history checks, the catch-event lookup, correlation."""
    settings = Settings(
        url=engine.rest_url,
        user=WORKER_USER,
        password=engine.worker_password,
        long_poll=timedelta(seconds=2),
        journal=":memory:",
    )
    keys = [f"least-{uuid.uuid4().hex[:8]}-{n}" for n in range(5)]
    ids = [start_instance(rest, key) for key in keys]

    errors = work_until_finished(make_router(0.05), settings, rest, ids).engine_errors
    for instance_id in ids:
        assert_finished_once(rest, instance_id)
    assert errors == 0
    for instance_id in ids:  # GET /incident knows no processInstanceIdIn: it would list all
        assert rest.get("/incident", params={"processInstanceId": instance_id}).json() == []


def test_demo_starts_as_the_administrator_and_works_as_the_worker_user(
    engine: Engine, tmp_path: Path
) -> None:
    env = {
        "CAMUNDA_URL": engine.rest_url,
        "CAMUNDA_USER": USER,
        "CAMUNDA_PASSWORD": PASSWORD,
        "CAMUNDA_STATE_DIR": str(engine.options.state_dir),
        "CAMUNDA_JOURNAL": str(tmp_path / "journal.sqlite3"),
        "CAMUNDA_LONG_POLL": "2",
    }
    result = run_cli("demo", "-n", "3", "--work-seconds", "0", "--timeout", "240", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"worker  : ran as {WORKER_USER}" in result.stdout
    assert engine.worker_password not in result.stdout + result.stderr
    # One instance's reply was deferred and answered through the CLI, its token never shown.
    assert "handed out a reply token" in result.stdout
    assert "camunda-relay reply: reply (1 variable) accepted" in result.stdout
    assert re.search(r"^\s+3\s+3\s+0\s+0\s", result.stdout, flags=re.MULTILINE), "3 of 3"


def test_a_user_outside_the_worker_group_is_warned_that_it_sees_nothing(
    engine: Engine, rest: httpx.Client
) -> None:
    """With authorizations on, the engine does not refuse such a user's fetch: it hands it no
    task, ever. The worker says so at start instead of polling in silence."""
    outsider, password = f"outsider{uuid.uuid4().hex[:8]}", "outsider-pass-1"
    created = rest.post(
        "/user/create", json={"profile": {"id": outsider}, "credentials": {"password": password}}
    )
    assert created.status_code == 204, created.text

    async def visible(user: str, secret: str) -> int:
        settings = Settings(url=engine.rest_url, user=user, password=secret)
        async with EngineClient(settings) as client:
            return await client.check_access()

    assert asyncio.run(visible(outsider, password)) == 0
    assert asyncio.run(visible(WORKER_USER, engine.worker_password)) >= 1

    env = {"CAMUNDA_URL": engine.rest_url, "CAMUNDA_USER": outsider, "CAMUNDA_PASSWORD": password}
    env |= {"CAMUNDA_JOURNAL": ":memory:", "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "camunda_relay.cli", "worker", "camunda_relay.examples.conception"],
        stderr=subprocess.PIPE,
        text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")}, **env},
    )
    seen: list[str] = []

    def read() -> None:
        for line in worker.stderr or ():
            seen.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        warning = f"user {outsider!r} sees no deployed process definition"
        wait_for(lambda: any(warning in line for line in seen), timeout=120, what=warning)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        reader.join(timeout=10)
        if worker.stderr is not None:
            worker.stderr.close()
    assert password not in "".join(seen)
