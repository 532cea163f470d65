"""OAuth2 client credentials against an in-process fake token endpoint, on a manual clock.

The provider's error paths (expiry, refresh, a refusing or unavailable identity provider,
many requests at once) and the transport's one retry on a 401, without sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qs

import httpx
import pytest

from camunda_relay import errors
from camunda_relay.client import EngineClient
from camunda_relay.clock import ManualClock
from camunda_relay.oauth import ClientCredentials, TokenProvider
from camunda_relay.settings import Settings, SettingsError

T = TypeVar("T")
TOKEN_URL = "https://idp.test/realms/relay/protocol/openid-connect/token"
SECRET = "canary-secret-3f9a"
CREDENTIALS = ClientCredentials(TOKEN_URL, "worker-client", SECRET, scope="engine")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


class FakeTokenEndpoint:
    """Answers token requests: ``status`` and ``expires_in`` as set; counts and records them."""

    def __init__(self) -> None:
        self.status = 200
        self.expires_in: int | None = 300
        self.down = False
        self.requests: list[tuple[dict[str, str], dict[str, str]]] = []
        self.gate: asyncio.Event | None = None

    def token(self, n: int) -> str:
        return f"canary-token-{n}"

    async def post(
        self, url: str, form: Mapping[str, str], headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        assert url == TOKEN_URL
        self.requests.append((dict(form), dict(headers)))
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise errors.EngineUnavailable("the identity provider is not reachable")
        if self.status != 200:
            return self.status, json.dumps({"error": "invalid_client"}).encode()
        body: dict[str, object] = {"access_token": self.token(len(self.requests))}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return 200, json.dumps(body).encode()


def provider(idp: FakeTokenEndpoint, clock: ManualClock) -> TokenProvider:
    return TokenProvider(CREDENTIALS, idp.post, clock=clock)


def test_a_token_is_fetched_once_and_kept_until_the_margin_before_expiry() -> None:
    async def scenario() -> None:
        idp, clock = FakeTokenEndpoint(), ManualClock()
        tokens = provider(idp, clock)
        assert await tokens.header() == "Bearer canary-token-1"
        clock.advance(269)  # 300 s token, renewed 30 s before it expires
        assert await tokens.header() == "Bearer canary-token-1"
        clock.advance(1)
        assert await tokens.header() == "Bearer canary-token-2"
        assert tokens.fetches == 2

    run(scenario())


def test_the_request_is_client_credentials_with_basic_or_form_client_auth() -> None:
    form, headers = CREDENTIALS.form()
    assert form == {"grant_type": "client_credentials", "scope": "engine"}
    pair = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode()
    assert pair == f"worker-client:{SECRET}"
    posted = ClientCredentials(TOKEN_URL, "c", "s", audience="engine-api", auth_method="post")
    form, headers = posted.form()
    assert form == {
        "grant_type": "client_credentials",
        "audience": "engine-api",
        "client_id": "c",
        "client_secret": "s",
    }
    assert "Authorization" not in headers
    assert SECRET not in repr(CREDENTIALS)


def test_many_requests_at_once_share_one_token_request() -> None:
    async def scenario() -> None:
        idp, clock = FakeTokenEndpoint(), ManualClock()
        idp.gate = asyncio.Event()
        tokens = provider(idp, clock)
        waiting = [asyncio.ensure_future(tokens.header()) for _ in range(50)]
        while not idp.requests:
            await asyncio.sleep(0)
        idp.gate.set()
        assert set(await asyncio.gather(*waiting)) == {"Bearer canary-token-1"}
        assert tokens.fetches == 1

    run(scenario())


def test_a_refusal_names_the_token_url_and_status_never_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        idp, clock = FakeTokenEndpoint(), ManualClock()
        idp.status = 401
        with pytest.raises(errors.TokenRefused) as raised:
            await provider(idp, clock).header()
        text = str(raised.value)
        for part in (TOKEN_URL, "401", "invalid_client"):
            assert part in text
        assert SECRET not in text
        assert "\n" not in text

    with caplog.at_level(logging.DEBUG):
        run(scenario())
    assert SECRET not in caplog.text
    assert "canary-token" not in caplog.text


def test_an_unavailable_provider_is_asked_again_only_after_a_growing_backoff() -> None:
    async def scenario() -> None:
        idp, clock = FakeTokenEndpoint(), ManualClock()
        idp.down = True
        tokens = provider(idp, clock)
        for _ in range(5):  # a caller in a tight loop: one request, the rest wait out the pause
            with pytest.raises(errors.EngineUnavailable) as raised:
                await tokens.header()
            assert raised.value.retryable
        assert tokens.fetches == 1
        clock.advance(1)
        with pytest.raises(errors.EngineUnavailable):
            await tokens.header()
        assert tokens.fetches == 2
        clock.advance(1)  # the second pause is 2 s
        with pytest.raises(errors.EngineUnavailable):
            await tokens.header()
        assert tokens.fetches == 2
        idp.down = False
        clock.advance(1)
        assert await tokens.header() == "Bearer canary-token-3"

    run(scenario())


def test_a_token_without_expires_in_is_kept_for_the_default_life() -> None:
    async def scenario() -> None:
        idp, clock = FakeTokenEndpoint(), ManualClock()
        idp.expires_in = None
        tokens = provider(idp, clock)
        await tokens.header()
        clock.advance(269)
        await tokens.header()
        assert tokens.fetches == 1

    run(scenario())


class FakeEngineAndIdp:
    """One MockTransport: the token endpoint and an engine that accepts only its last token."""

    def __init__(self) -> None:
        self.issued = 0
        self.valid: str | None = None
        self.seen: list[str | None] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "idp.test":
            form = parse_qs(request.content.decode())
            assert form["grant_type"] == ["client_credentials"]
            self.issued += 1
            self.valid = f"canary-token-{self.issued}"
            return httpx.Response(200, json={"access_token": self.valid, "expires_in": 300})
        header = request.headers.get("Authorization")
        self.seen.append(header)
        if request.url.path.endswith("/engine"):
            return httpx.Response(200, json=[{"name": "default"}])
        if header != f"Bearer {self.valid}":
            return httpx.Response(401)
        return httpx.Response(200, json={"count": 1})


SETTINGS = Settings(
    url="http://engine.test/engine-rest",
    oauth_token_url=TOKEN_URL,
    oauth_client_id="worker-client",
    oauth_client_secret=SECRET,
)


def test_a_401_from_the_engine_is_retried_once_with_a_new_token() -> None:
    async def scenario() -> None:
        fake = FakeEngineAndIdp()
        async with EngineClient(SETTINGS, transport=httpx.MockTransport(fake.handle)) as client:
            assert await client.check_access() == 1
            fake.valid = "revoked-by-the-engine"  # the engine no longer takes token 1
            assert await client.check_access() == 1
            assert fake.issued == 2
            assert fake.seen == [
                "Bearer canary-token-1",
                "Bearer canary-token-1",
                "Bearer canary-token-2",
            ]

    run(scenario())


def test_a_token_the_engine_keeps_refusing_is_one_clear_error() -> None:
    async def scenario() -> None:
        fake = FakeEngineAndIdp()

        def refuse(request: httpx.Request) -> httpx.Response:
            response = fake.handle(request)
            return httpx.Response(401) if request.url.host == "engine.test" else response

        async with EngineClient(SETTINGS, transport=httpx.MockTransport(refuse)) as client:
            with pytest.raises(errors.AuthenticationFailed) as raised:
                await client.check_access()
        assert "worker-client" in str(raised.value)
        assert "canary" not in str(raised.value)
        assert fake.issued == 2  # one retry, not a loop

    run(scenario())


def test_the_readiness_probe_sends_no_token() -> None:
    async def scenario() -> None:
        fake = FakeEngineAndIdp()
        async with EngineClient(SETTINGS, transport=httpx.MockTransport(fake.handle)) as client:
            assert await client.ready()
        assert fake.issued == 0
        assert fake.seen == [None]

    run(scenario())


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CAMUNDA_OAUTH_TOKEN_URL": TOKEN_URL}, "together"),
        (
            {
                "CAMUNDA_OAUTH_TOKEN_URL": TOKEN_URL,
                "CAMUNDA_OAUTH_CLIENT_ID": "c",
                "CAMUNDA_OAUTH_CLIENT_SECRET": SECRET,
                "CAMUNDA_USER": "u",
                "CAMUNDA_PASSWORD": "p",
            },
            "not both",
        ),
        (
            {
                "CAMUNDA_OAUTH_TOKEN_URL": "http://idp.example/token",
                "CAMUNDA_OAUTH_CLIENT_ID": "c",
                "CAMUNDA_OAUTH_CLIENT_SECRET": SECRET,
            },
            "https:// off loopback",
        ),
    ],
)
def test_unusable_oauth_settings_are_one_line(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        Settings.load(environ)
    assert SECRET not in str(raised.value)
    assert "\n" not in str(raised.value)


def test_oauth_settings_load_from_the_environment_with_the_secret_hidden() -> None:
    settings = Settings.load(
        {
            "CAMUNDA_OAUTH_TOKEN_URL": "http://127.0.0.1:8180/realms/r/protocol/openid-connect/token",
            "CAMUNDA_OAUTH_CLIENT_ID": "c",
            "CAMUNDA_OAUTH_CLIENT_SECRET": SECRET,
            "CAMUNDA_OAUTH_SCOPE": "engine",
            "CAMUNDA_OAUTH_CLIENT_AUTH": "post",
        }
    )
    assert settings.oauth_client_auth == "post"
    assert settings.oauth_scope == "engine"
    assert SECRET not in repr(settings)


# -- the token URL as printed, and the error kept between attempts ---------------------------

SECRET_URL = "https://svc:url-password-7c1d@idp.test/realms/relay/token?api_key=query-secret-9e2b#f"


def test_a_refusal_names_the_token_host_never_its_credentials_or_query() -> None:
    async def scenario() -> str:
        idp, clock = FakeTokenEndpoint(), ManualClock()
        idp.status = 401

        async def post(
            url: str, form: Mapping[str, str], headers: Mapping[str, str]
        ) -> tuple[int, bytes]:
            return await idp.post(TOKEN_URL, form, headers)

        credentials = ClientCredentials(SECRET_URL, "worker-client", SECRET)
        with pytest.raises(errors.TokenRefused) as raised:
            await TokenProvider(credentials, post, clock=clock).header()
        return str(raised.value)

    text = run(scenario())
    assert "https://idp.test/realms/relay/token" in text
    for secret in ("url-password-7c1d", "query-secret-9e2b", "svc:", "api_key"):
        assert secret not in text


def test_an_unusable_token_url_setting_is_shown_without_credentials_or_query() -> None:
    with pytest.raises(SettingsError, match="https:// off loopback") as raised:
        Settings.load(
            {
                "CAMUNDA_OAUTH_TOKEN_URL": "http://svc:url-password-7c1d@idp.test/t?k=query-9e2b",
                "CAMUNDA_OAUTH_CLIENT_ID": "c",
                "CAMUNDA_OAUTH_CLIENT_SECRET": SECRET,
            }
        )
    text = str(raised.value)
    assert "http://idp.test/t" in text
    assert "url-password-7c1d" not in text
    assert "query-9e2b" not in text


def _depth(error: BaseException) -> int:
    depth, tb = 0, error.__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    return depth


def test_the_error_kept_during_the_backoff_does_not_grow_with_each_raise() -> None:
    """A caller in a tight loop gets the provider's last error again and again: each raise
    is a copy with its own short traceback, and the kept error holds no frames."""

    async def scenario() -> list[int]:
        idp, clock = FakeTokenEndpoint(), ManualClock()
        idp.down = True
        tokens = provider(idp, clock)
        depths = []
        for _ in range(50):
            try:
                await tokens.header()
            except errors.EngineUnavailable as error:
                depths.append(_depth(error))
        assert tokens.fetches == 1
        return depths

    depths = run(scenario())
    assert len(depths) == 50
    assert len(set(depths[1:])) == 1, depths[:5]
