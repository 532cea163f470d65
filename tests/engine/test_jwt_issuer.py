"""The engine's bearer-token check against identity providers run here (no Keycloak): which
tokens log in (access tokens of an allowed client for the engine's audience, nothing else),
what a forged key id costs the issuer, a key the issuer adds later, an engine configured
without an audience, and an issuer that accepts connections and never answers."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from camunda_relay import bundled_engine
from camunda_relay.engine_options import NO_AUDIENCE
from tests.support.engine import USER, Engine, start_engine, wait_for
from tests.support.issuer import StaticIssuer, hung_issuer, static_issuer
from tests.support.jwt import SigningKey
from tests.support.tools import free_port

AUDIENCE = "relayengine"
CLIENT = "relayworker1"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return SigningKey.generate(tmp_path_factory.mktemp("issuer-keys"), "one").with_kid("one")


@pytest.fixture(scope="module")
def issuer(key: SigningKey) -> Iterator[StaticIssuer]:
    with static_issuer(key) as served:
        yield served


@pytest.fixture(scope="module")
def jwt_engine(
    engine_jar: Path, issuer: StaticIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    jwt = bundled_engine.Jwt(issuer.issuer, audience=AUDIENCE, allowed_clients=(CLIENT,))
    running = start_engine(
        engine_jar,
        tmp_path_factory.mktemp("jwt-issuer-engine"),
        free_port(),
        jwt=jwt,
        properties={"logging.level.io.camundarelay.engine": "DEBUG"},
    )
    yield running
    bundled_engine.stop(running.info.pid)


def _access(issuer: str, **claims: Any) -> dict[str, Any]:
    """An access token's claims as Keycloak writes them, for the engine's audience."""
    now = int(time.time())
    return {
        "iss": issuer,
        "aud": AUDIENCE,
        "azp": CLIENT,
        "typ": "Bearer",
        "preferred_username": USER,
        "iat": now,
        "exp": now + 300,
    } | claims


def _status(engine: Engine, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=engine.rest_url, timeout=60, headers=headers) as rest:
        return rest.get("/process-definition/count").status_code


def test_access_tokens_of_an_allowed_client_for_the_audience_log_in(
    jwt_engine: Engine, issuer: StaticIssuer, key: SigningKey
) -> None:
    claims = _access(issuer.issuer)
    without_typ = {name: value for name, value in claims.items() if name != "typ"}
    tokens = {
        "Keycloak's (typ JWT, claim typ Bearer)": key.sign(claims),
        "RFC 9068 (typ at+jwt)": key.sign(claims, typ="at+jwt"),
        "typ application/at+jwt": key.sign(claims, typ="application/at+jwt"),
        "no typ at all": key.sign(without_typ, typ=None),
        "an audience list": key.sign(claims | {"aud": ["account", AUDIENCE]}),
        "client_id instead of azp": key.sign(
            {name: value for name, value in claims.items() if name != "azp"} | {"client_id": CLIENT}
        ),
    }
    statuses = {name: _status(jwt_engine, token) for name, token in tokens.items()}
    assert statuses == dict.fromkeys(tokens, 200)


def test_id_tokens_and_other_clients_tokens_are_refused(
    jwt_engine: Engine, issuer: StaticIssuer, key: SigningKey
) -> None:
    """An ID token (Keycloak's claim typ ID, signed with the same key) or a token of another
    client of the realm names a user just as well: neither may log in."""
    claims = _access(issuer.issuer)
    tokens = {
        "an ID token": key.sign(claims | {"typ": "ID"}),
        "a refresh token": key.sign(claims | {"typ": "Refresh"}),
        "a logout token (typ logout+jwt)": key.sign(claims, typ="logout+jwt"),
        "another client": key.sign(claims | {"azp": "someoneelse"}),
        "no client": key.sign({name: value for name, value in claims.items() if name != "azp"}),
        "another audience": key.sign(claims | {"aud": "account"}),
        "no audience": key.sign({name: value for name, value in claims.items() if name != "aud"}),
    }
    statuses = {name: _status(jwt_engine, token) for name, token in tokens.items()}
    assert statuses == dict.fromkeys(tokens, 401)


def test_forged_key_ids_do_not_make_the_engine_fetch_keys_each_time(
    jwt_engine: Engine, issuer: StaticIssuer, key: SigningKey, tmp_path: Path
) -> None:
    assert _status(jwt_engine, key.sign(_access(issuer.issuer))) == 200
    before = issuer.jwks_requests
    forger = SigningKey.generate(tmp_path, "forger")
    forged = [forger.with_kid(uuid.uuid4().hex).sign(_access(issuer.issuer)) for _ in range(30)]
    assert [_status(jwt_engine, token) for token in forged] == [401] * 30
    fetched = issuer.jwks_requests - before
    print(f"30 tokens with unknown key ids: the JWK set fetched {fetched} times")
    assert fetched <= 2


def test_forged_key_ids_while_the_jwk_set_hangs_hold_few_threads(
    jwt_engine: Engine, issuer: StaticIssuer, key: SigningKey, tmp_path: Path
) -> None:
    """The issuer answers its configuration but its JWK set hangs, and 200 tokens with forged
    key ids come within 2 s: one fetch, a few requests waiting for it, the rest refused at once;
    a Basic request and a token with a known key beside them are served."""
    assert _status(jwt_engine, key.sign(_access(issuer.issuer))) == 200
    forger = SigningKey.generate(tmp_path, "forger")
    forged = [forger.with_kid(uuid.uuid4().hex).sign(_access(issuer.issuer)) for _ in range(200)]
    # Past the engine's minimum interval between fetches for unknown key ids (10 s).
    wait_for(lambda: time.monotonic() - issuer.last_jwks_request > 11, timeout=60, what="10 s")
    before = issuer.jwks_requests
    issuer.hang_jwks = True
    try:
        with jwt_engine.client() as admin:
            baseline = _threads(jwt_engine.info.pid)
            peak = _ThreadPeak(jwt_engine.info.pid)
            try:
                pending = _send_all(jwt_engine, forged)
                basic = admin.get("/process-definition/count", timeout=10.0)
                assert basic.status_code == 200, basic.text
                assert _status(jwt_engine, key.sign(_access(issuer.issuer))) == 200
                statuses = _status_lines(pending, within=30)
            finally:
                highest = peak.stop()
    finally:
        issuer.hang_jwks = False
        issuer.released.set()
    fetched = issuer.jwks_requests - before
    print(
        f"200 forged key ids with a hung JWK set: {fetched} fetch(es); engine threads "
        f"{baseline} before, at most {highest} during"
    )
    assert {line: statuses.count(line) for line in statuses} == {"HTTP/1.1 401": 200}
    assert fetched == 1
    assert highest - baseline < 100  # one per bearer request: 190 (the pool maximum)


def test_a_key_the_issuer_adds_later_is_taken_without_a_restart(
    jwt_engine: Engine, issuer: StaticIssuer, tmp_path: Path
) -> None:
    """The issuer signs with a new key (Keycloak's key rotation): its first tokens may be
    refused while the engine's last fetch is recent, then they log in."""
    new = SigningKey.generate(tmp_path, "new").with_kid(f"new-{uuid.uuid4().hex[:6]}")
    issuer.keys.append(new)
    token = new.sign(_access(issuer.issuer))
    wait_for(lambda: _status(jwt_engine, token) == 200, timeout=120, what="the new key taken")


def test_the_engine_refuses_an_issuer_without_an_audience_or_allowed_clients(
    engine_jar: Path, tmp_path: Path
) -> None:
    """The jar itself, without the Python side: one line on stderr and exit code 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")}
    env |= {
        "CAMUNDA_PORT": str(free_port()),
        "CAMUNDA_DATA_DIR": str(tmp_path / "data"),
        "CAMUNDA_JWT_ISSUER_URI": "https://idp.example/realms/relay",
    }
    engine = subprocess.Popen(
        [bundled_engine._java(), "-jar", str(engine_jar)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = engine.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        engine.kill()
        engine.communicate()
        raise AssertionError("the engine started instead of refusing its settings") from None
    assert engine.returncode == 2, stderr[-2000:]
    assert stderr.strip().splitlines() == [bundled_engine.REFUSAL + NO_AUDIENCE]
    assert not (tmp_path / "data").exists()


def _log(engine: Engine) -> str:
    return engine.options.log_file.read_text(errors="replace")


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no thread count for pid {pid}")


class _ThreadPeak:
    """The engine's highest thread count seen, sampled from /proc until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = _threads(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, _threads(self.pid))
            except FileNotFoundError:  # the engine is gone
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.peak


def _send_bearer(engine: Engine, token: str) -> socket.socket:
    """A bearer request sent whole on a connection of its own; its answer read later."""
    host, port = engine.info.host, engine.info.port
    sock = socket.create_connection((host, port), timeout=60)
    request = (
        f"GET /engine-rest/process-definition/count HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


def _send_all(engine: Engine, tokens: list[str]) -> list[socket.socket]:
    """A bearer request per token, spread over about 2 s: an engine that answers them at once
    has few of them in hand at any time, one that holds them has all of them (pacing the
    load, not waiting for anything)."""
    sent = []
    for token in tokens:
        sent.append(_send_bearer(engine, token))
        time.sleep(0.01)
    return sent


def _status_lines(socks: list[socket.socket], *, within: float) -> list[str]:
    """The answers' status lines, "no answer" for those not answered ``within`` seconds."""
    deadline = time.monotonic() + within
    lines = []
    for sock in socks:
        with sock:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                lines.append(sock.makefile("rb").readline().decode().strip())
            except TimeoutError:
                lines.append("no answer")
    return lines


def test_a_hung_issuer_stalls_neither_basic_requests_nor_the_engines_threads(
    engine_jar: Path, tmp_path: Path
) -> None:
    """The issuer accepts connections and never answers: 200 bearer requests within 2 s are
    refused (401), a Basic request beside them is answered, and the engine's thread count
    stays far below one thread per bearer request (the figures are printed)."""
    with hung_issuer() as hung:
        jwt = bundled_engine.Jwt(hung.issuer, audience=AUDIENCE)
        running = start_engine(engine_jar, tmp_path / "engine", free_port(), jwt=jwt)
        try:
            key = SigningKey.generate(tmp_path, "any").with_kid("any")
            token = key.sign(_access(hung.issuer))
            with running.client() as admin:
                assert admin.get("/process-definition/count").status_code == 200
                baseline = _threads(running.info.pid)
                peak = _ThreadPeak(running.info.pid)
                try:
                    pending = _send_all(running, [token] * 200)
                    started = time.monotonic()
                    # Answered in well under a second here; the bound is wide for a loaded
                    # machine, and far below the stall (an issuer's 30 s timeout per request).
                    basic = admin.get("/process-definition/count", timeout=10.0)
                    answered_in = time.monotonic() - started
                    assert basic.status_code == 200, basic.text
                    statuses = _status_lines(pending, within=30)
                finally:
                    highest = peak.stop()
            print(
                f"Basic answered in {answered_in:.3f} s beside 200 bearer requests; engine "
                f"threads {baseline} before, at most {highest} during; the issuer got "
                f"{hung.connections} connections"
            )
            assert {line: statuses.count(line) for line in statuses} == {"HTTP/1.1 401": 200}
            assert highest - baseline < 100  # one per bearer request: 190 (the pool maximum)
            warning = f"the JWT issuer {hung.issuer} cannot be asked for its keys"
            wait_for(lambda: warning in _log(running), what="the WARN line")
            assert token not in _log(running)
        finally:
            bundled_engine.stop(running.info.pid)
