"""JWT bearer tokens from a real Keycloak on the bundled engine, beside Basic: a client whose
service account is an engine user in the worker group runs the worker and the CLI with
``CAMUNDA_OAUTH_*``; a client the engine grants nothing is refused; forged, tampered and
expired tokens get 401; no token or client secret shows in the engine's log or the worker's
output. Keycloak names a service account ``service-account-<client id>``, which Camunda's id
pattern (letters and digits) refuses as a user id: the engine takes the user from the
``azp`` claim (the client id) here, ``CAMUNDA_JWT_USER_CLAIM=azp``."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from camunda_relay import bundled_engine
from tests.support.engine import (
    MESSAGE,
    USER,
    Engine,
    fetch_and_lock,
    historic_instance,
    start_engine,
    start_instance,
    wait_for,
)
from tests.support.jwt import JWT_PATTERN, SigningKey, claims, header
from tests.support.keycloak import Client, Keycloak
from tests.support.tools import free_port, run_cli

WORKER_GROUP = "relayworkers"
MODEL = Path(__file__).parents[2] / "engine/src/main/resources/processes/correlation-message.bpmn"


@pytest.fixture(scope="module")
def trusted_key(keycloak: Keycloak, tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    """A key of ours in the realm's JWK set (below Keycloak's own, which keeps signing): the
    tokens it signs differ from Keycloak's in exactly the claims a test sets."""
    key = SigningKey.generate(tmp_path_factory.mktemp("jwt-keys"), "trusted")
    return key.with_kid(keycloak.add_signing_key(key.pem.read_text(), priority=1))


@pytest.fixture(scope="module")
def clients(keycloak: Keycloak) -> dict[str, Client]:
    """The realm's clients the tests use, made before the engine that allows them starts;
    ``other`` is a client of the realm the engine does not allow."""
    return {
        role: keycloak.create_client(f"relay{role}{uuid.uuid4().hex[:8]}")
        for role in ("worker", "nobody", "forger", "other")
    }


@pytest.fixture(scope="module")
def jwt_engine(
    engine_jar: Path,
    keycloak: Keycloak,
    trusted_key: SigningKey,
    clients: dict[str, Client],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Engine]:
    started = time.monotonic()
    allowed = tuple(client.client_id for role, client in clients.items() if role != "other")
    running = start_engine(
        engine_jar,
        tmp_path_factory.mktemp("jwt-engine"),
        free_port(),
        jwt=bundled_engine.Jwt(keycloak.issuer, user_claim="azp", allowed_clients=allowed),
        # Every line the bearer check and Spring Security could write, for the log checks.
        properties={
            "logging.level.io.camundarelay.engine": "DEBUG",
            "logging.level.org.springframework.security": "DEBUG",
        },
    )
    print(f"engine with CAMUNDA_JWT_ISSUER_URI ready in {time.monotonic() - started:.1f} s")
    yield running
    bundled_engine.stop(running.info.pid)


@pytest.fixture
def admin(jwt_engine: Engine) -> Iterator[httpx.Client]:
    with jwt_engine.client() as client:
        yield client


def _engine_user(admin: httpx.Client, user: str, *, group: str | None) -> None:
    created = admin.post(
        "/user/create",
        json={"profile": {"id": user}, "credentials": {"password": secrets.token_urlsafe(18)}},
    )
    assert created.status_code == 204, created.text
    if group is not None:
        joined = admin.put(f"/group/{group}/members/{user}")
        assert joined.status_code == 204, joined.text


def _oauth_env(engine: Engine, keycloak: Keycloak, client: Client) -> dict[str, str]:
    return {
        "CAMUNDA_URL": engine.rest_url,
        "CAMUNDA_OAUTH_TOKEN_URL": keycloak.token_url,
        "CAMUNDA_OAUTH_CLIENT_ID": client.client_id,
        "CAMUNDA_OAUTH_CLIENT_SECRET": client.secret,
    }


def _bearer(engine: Engine, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=engine.rest_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def _engine_log(engine: Engine) -> str:
    return engine.options.log_file.read_text(errors="replace")


def _assert_no_secrets(text: str, *secret: str) -> None:
    assert not re.search(JWT_PATTERN, text), "a JWT in the output"
    for value in secret:
        assert value not in text


def test_a_service_account_in_the_worker_group_runs_the_worker_and_the_cli(
    jwt_engine: Engine,
    keycloak: Keycloak,
    clients: dict[str, Client],
    admin: httpx.Client,
    tmp_path: Path,
) -> None:
    client = clients["worker"]
    _engine_user(admin, client.client_id, group=WORKER_GROUP)
    keys = [f"jwt-{uuid.uuid4().hex[:8]}-{n}" for n in range(3)]
    ids = [start_instance(admin, key) for key in keys]

    env = _oauth_env(jwt_engine, keycloak, client) | {
        "CAMUNDA_JOURNAL": str(tmp_path / "journal.sqlite3"),
        "CAMUNDA_LONG_POLL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "camunda_relay.cli", "worker", "--log-level", "debug"]
    worker = subprocess.Popen(
        [*command, "camunda_relay.examples.conception"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")}, **env},
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(worker.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: all(historic_instance(admin, i)["state"] == "COMPLETED" for i in ids),
            timeout=240,
            what="the instances finished by the worker",
        )
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        reader.join(timeout=10)
        if worker.stdout is not None:
            worker.stdout.close()
    seen = "".join(output)
    assert "sees no deployed process definition" not in seen
    _assert_no_secrets(seen, client.secret)

    # The CLI with the same settings: the reply to an instance whose task the admin completed.
    key = f"jwt-cli-{uuid.uuid4().hex[:8]}"
    instance = start_instance(admin, key)
    (task,) = wait_for(
        lambda: [t for t in fetch_and_lock(admin, "admin") if t["processInstanceId"] == instance],
        what="the task",
    )
    done = admin.post(f"/external-task/{task['id']}/complete", json={"workerId": "admin"})
    assert done.status_code == 204, done.text
    result = run_cli("correlate", MESSAGE, "--business-key", key, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert historic_instance(admin, instance)["state"] == "COMPLETED"
    _assert_no_secrets(result.stdout + result.stderr, client.secret)
    _assert_no_secrets(_engine_log(jwt_engine), client.secret)


def test_a_client_the_engine_grants_nothing_is_refused(
    jwt_engine: Engine, keycloak: Keycloak, clients: dict[str, Client], admin: httpx.Client
) -> None:
    """A token naming a user the engine does not know is authenticated, as that user id with
    no groups: it sees nothing and may do nothing until a grant names that id."""
    client = clients["nobody"]
    with _bearer(jwt_engine, keycloak.token(client)) as nobody:
        counted = nobody.get("/process-definition/count")
        started = nobody.post("/process-definition/key/correlation-message/start", json={})
        deployed = nobody.post(
            "/deployment/create",
            data={"deployment-name": "nobody"},
            files={"model.bpmn": ("model.bpmn", MODEL.read_bytes(), "application/octet-stream")},
        )
        users = nobody.get("/user")
        assert counted.status_code == 200, counted.text
        assert counted.json()["count"] == 0
        # The definition is hidden from this user, so the engine does not find it.
        assert started.status_code == 404, started.text
        assert "No matching process definition" in started.json()["message"]
        assert deployed.status_code == 403, deployed.text
        assert deployed.json()["type"] == "AuthorizationException"
        assert users.json() == []
        grant = admin.post(
            "/authorization/create",
            json={
                "type": 1,
                "permissions": ["READ"],
                "userId": client.client_id,
                "resourceType": 6,
                "resourceId": "*",
            },
        )
        assert grant.status_code == 200, grant.text
        assert nobody.get("/process-definition/count").json()["count"] >= 1
    result = run_cli(
        "correlate",
        MESSAGE,
        "--business-key",
        "nobody",
        env=_oauth_env(jwt_engine, keycloak, client),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    _assert_no_secrets(result.stdout + result.stderr, client.secret)


def test_forged_tampered_and_expired_tokens_get_401(
    jwt_engine: Engine,
    keycloak: Keycloak,
    clients: dict[str, Client],
    admin: httpx.Client,
    trusted_key: SigningKey,
) -> None:
    client = clients["forger"]
    _engine_user(admin, client.client_id, group=WORKER_GROUP)
    real = keycloak.token(client)
    now = int(time.time())
    mine = claims(real) | {"iat": now, "exp": now + 300}
    as_admin = claims(real) | {"azp": USER}
    untrusted = SigningKey.generate(jwt_engine.options.state_dir, "untrusted")
    head, _, signature = real.split(".")
    tampered_body = trusted_key.sign(as_admin).split(".")[1]
    refused = {
        "tampered": f"{head}.{tampered_body}.{signature}",
        "other key": untrusted.with_kid(header(real)["kid"]).sign(as_admin),
        "expired": trusted_key.sign(mine | {"iat": now - 900, "exp": now - 600}),
        "other issuer": trusted_key.sign(mine | {"iss": "http://127.0.0.1:1/realms/relay"}),
        "not a JWT": "not-a-jwt",
        "a client the engine does not allow": keycloak.token(clients["other"]),
        "an ID token of an allowed client": keycloak.id_token(client),
    }
    accepted = {"Keycloak's": real, "ours": trusted_key.sign(mine)}
    for name, token in accepted.items():
        with _bearer(jwt_engine, token) as rest:
            response = rest.get("/process-definition/count")
        assert response.status_code == 200, (name, response.text)
        assert response.json()["count"] >= 1, name
    for name, token in refused.items():
        with _bearer(jwt_engine, token) as rest:
            response = rest.get("/process-definition/count")
        assert response.status_code == 401, (name, response.text)
        assert 'Bearer realm="default"' in response.headers.get_list("WWW-Authenticate"), name
    basic = admin.get("/process-definition/count")  # Basic beside bearer tokens
    assert basic.status_code == 200, basic.text
    log = _engine_log(jwt_engine)
    assert "bearer token refused: Invalid signature" in log
    assert "bearer token refused: Jwt expired at" in log
    _assert_no_secrets(log, client.secret, *refused.values(), *accepted.values())


def test_an_engine_whose_issuer_is_down_starts_and_refuses_bearer_tokens(
    engine_jar: Path, tmp_path: Path
) -> None:
    """The issuer is asked in the background, from the start: Basic works meanwhile, a bearer
    token gets 401, and a WARN line names the issuer (and not the token)."""
    issuer = f"http://127.0.0.1:{free_port()}/realms/relay"  # nothing listens there
    started = time.monotonic()
    jwt = bundled_engine.Jwt(issuer, audience="relayengine")
    running = start_engine(engine_jar, tmp_path / "engine", free_port(), jwt=jwt)
    print(f"engine with an unreachable issuer ready in {time.monotonic() - started:.1f} s")
    try:
        now = int(time.time())
        key = SigningKey.generate(tmp_path, "any").with_kid("any")
        token = key.sign(
            {"iss": issuer, "aud": "relayengine", "preferred_username": USER, "exp": now + 300}
        )
        with running.client() as admin, _bearer(running, token) as bearer:
            assert admin.get("/process-definition/count").status_code == 200
            for _ in range(2):
                refused = bearer.get("/process-definition/count")
                assert refused.status_code == 401, refused.text
        warning = (
            f"the JWT issuer {issuer} cannot be asked for its keys (ConnectException): bearer"
            " tokens are refused until it answers"
        )
        wait_for(lambda: warning in _engine_log(running), what="the WARN line")
        _assert_no_secrets(_engine_log(running), token)
    finally:
        bundled_engine.stop(running.info.pid)
