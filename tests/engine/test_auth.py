"""The REST API and the webapps require a login; only the readiness probe is open."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from camunda_relay import AuthenticationFailed, EngineClient, Settings
from tests.support.engine import FLAVOUR, PASSWORD, USER, Engine

APPS = f"/{FLAVOUR.name}"  # the webapps' root: /camunda, /operaton

# A failed login throttles that user for a few seconds (Camunda's login delay), so wrong
# passwords are tried on a user of their own, never on the one the other tests use.
DECOY_USER = "decoy"
DECOY_PASSWORD = "decoy-password"


@pytest.fixture(scope="module")
def decoy_user(engine: Engine) -> str:
    with engine.client() as rest:
        response = rest.post(
            "/user/create",
            json={
                "profile": {
                    "id": DECOY_USER,
                    "firstName": "D",
                    "lastName": "D",
                    "email": "d@x.test",
                },
                "credentials": {"password": DECOY_PASSWORD},
            },
        )
    assert response.status_code == 204, response.text
    return DECOY_USER


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (None, 401),
        ((DECOY_USER, "wrong-password"), 401),
        (("nobody", PASSWORD), 401),
        ((USER, PASSWORD), 200),
    ],
    ids=["no-credentials", "wrong-password", "unknown-user", "right"],
)
def test_rest_api_requires_basic_auth(
    engine: Engine, decoy_user: str, auth: tuple[str, str] | None, expected: int
) -> None:
    response = httpx.get(f"{engine.rest_url}/process-definition", auth=auth, timeout=30)
    assert response.status_code == expected


def test_readiness_probe_is_open(engine: Engine) -> None:
    response = httpx.get(f"{engine.rest_url}/engine", timeout=30)
    assert response.status_code == 200
    assert response.json() == [{"name": "default"}]


def test_default_demo_user_is_not_created_when_credentials_are_set(engine: Engine) -> None:
    response = httpx.get(f"{engine.rest_url}/process-definition", auth=("demo", "demo"), timeout=30)
    assert response.status_code == 401


def _login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    client.get(f"{APPS}/app/welcome/default/")
    token = client.cookies.get("XSRF-TOKEN", path=APPS)
    assert token, "the webapp did not hand out an XSRF token"
    return client.post(
        f"{APPS}/api/admin/auth/user/default/login/cockpit",
        data={"username": user, "password": password},
        headers={"X-XSRF-TOKEN": token},
    )


def test_webapps_require_a_login(engine: Engine, decoy_user: str) -> None:
    with httpx.Client(base_url=engine.info.base_url, timeout=30) as anonymous:
        api = f"{APPS}/api/engine/engine/default/process-definition"
        assert anonymous.get(api).status_code == 401
        assert _login(anonymous, decoy_user, "wrong-password").status_code == 401
    with httpx.Client(base_url=engine.info.base_url, timeout=30) as person:
        login = _login(person, USER, PASSWORD)
        assert login.status_code == 200
        assert "cockpit" in login.json()["authorizedApps"]
        token = person.cookies.get("XSRF-TOKEN", path=APPS)
        assert person.get(api, headers={"X-XSRF-TOKEN": token or ""}).status_code == 200


def test_a_login_right_after_a_wrong_one_is_refused_and_the_message_says_why(
    engine: Engine, decoy_user: str
) -> None:
    """Camunda delays a user after a wrong password (3 s after the first); the right password
    is refused meanwhile with the same 401, and the client's line names both causes."""
    url = f"{engine.rest_url}/process-definition/count"
    with httpx.Client(timeout=30) as client:
        assert client.get(url, auth=(decoy_user, "wrong-password")).status_code == 401
        assert client.get(url, auth=(decoy_user, DECOY_PASSWORD)).status_code == 401
    settings = Settings(url=engine.rest_url, user=decoy_user, password=DECOY_PASSWORD)

    async def check() -> None:
        async with EngineClient(settings) as client:
            await client.check_access()

    with pytest.raises(AuthenticationFailed) as caught:
        asyncio.run(check())
    assert caught.value.message == (
        f"the engine at {engine.rest_url} refused user {decoy_user!r}: wrong CAMUNDA_USER or "
        "CAMUNDA_PASSWORD, or that user is held back after failed logins (the engine refuses "
        "it for up to 60 s after each wrong password, then accepts it again)"
    )
    assert DECOY_PASSWORD not in str(caught.value)
