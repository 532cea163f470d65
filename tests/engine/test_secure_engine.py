"""An engine set up as for production: HTTPS with a certificate from a CA made here, and
login throttling. One engine for the module (a start costs half a minute); its login delay
is capped at 1 s instead of 60 s, so that a dozen spaced wrong logins take seconds."""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from camunda_relay import Settings, bundled_engine
from camunda_relay.examples.conception import make_router
from tests.support.engine import (
    FLAVOUR,
    PASSWORD,
    USER,
    WORKER_USER,
    Engine,
    assert_finished_once,
    start_engine,
    start_instance,
    wait_for,
    work_until_finished,
)
from tests.support.tls import Certificates, make_certificates
from tests.support.tools import free_port, run_cli

LOGIN_DELAY_MAX = f"{FLAVOUR.property_prefix}.generic-properties.properties.login-delay-max-time"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_engine(
    engine_jar: Path, certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    running = start_engine(
        engine_jar,
        tmp_path_factory.mktemp("https-engine"),
        free_port(),
        tls=bundled_engine.Tls(certificate=certificates.certificate, key=certificates.key),
        properties={LOGIN_DELAY_MAX: "1"},
    )
    yield running
    bundled_engine.stop(running.info.pid)


@pytest.fixture
def trust(certificates: Certificates) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certificates.ca)


@pytest.fixture
def admin(https_engine: Engine, trust: ssl.SSLContext) -> Iterator[httpx.Client]:
    with https_engine.client(verify=trust) as client:
        yield client


def test_the_engine_speaks_https_only(https_engine: Engine) -> None:
    assert https_engine.rest_url.startswith("https://127.0.0.1:")
    plain = https_engine.rest_url.replace("https://", "http://")
    response = httpx.get(f"{plain}/engine", timeout=30)
    assert response.status_code == 400  # Tomcat: "This combination of host and port requires TLS."


@pytest.mark.parametrize("trusted", ["ca", "none", "other-ca"])
def test_the_cli_trusts_the_engine_only_with_its_ca_bundle(
    https_engine: Engine, certificates: Certificates, trusted: str
) -> None:
    env = {"CAMUNDA_URL": https_engine.rest_url, "CAMUNDA_USER": USER, "CAMUNDA_PASSWORD": PASSWORD}
    if trusted == "ca":
        env["CAMUNDA_CA_BUNDLE"] = str(certificates.ca)
    elif trusted == "other-ca":
        env["CAMUNDA_CA_BUNDLE"] = str(certificates.self_signed)
    key = f"tls-{uuid.uuid4().hex[:8]}"
    result = run_cli("start", "correlation-message", "--business-key", key, env=env)
    if trusted == "ca":
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("started process instance ")
        return
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: the engine at {https_engine.rest_url}: the engine's TLS certificate is not "
        "trusted (unable to get local issuer certificate): set CAMUNDA_CA_BUNDLE to the PEM "
        "file of the CA that signed it"
    ]


def test_the_worker_cli_names_an_untrusted_certificate_in_one_line(
    https_engine: Engine, tmp_path: Path
) -> None:
    env = {
        "CAMUNDA_URL": https_engine.rest_url,
        "CAMUNDA_USER": WORKER_USER,
        "CAMUNDA_PASSWORD": https_engine.worker_password,
        "CAMUNDA_JOURNAL": str(tmp_path / "journal.sqlite3"),
    }
    result = run_cli("worker", "camunda_relay.examples.conception", env=env)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "TLS certificate is not trusted" in line
    assert "CAMUNDA_CA_BUNDLE" in line
    assert "not reachable" not in line


def test_the_worker_completes_and_correlates_over_https(
    https_engine: Engine, certificates: Certificates, admin: httpx.Client
) -> None:
    settings = Settings(
        url=https_engine.rest_url,
        user=WORKER_USER,
        password=https_engine.worker_password,
        ca_bundle=certificates.ca,
        long_poll=timedelta(seconds=2),
        journal=":memory:",
    )
    ids = [start_instance(admin, f"https-{uuid.uuid4().hex[:8]}-{n}") for n in range(3)]

    work_until_finished(make_router(0.05), settings, admin, ids)
    for instance_id in ids:
        assert_finished_once(admin, instance_id)


def _counted_failures(engine: Engine, user: str) -> int:
    """Wrong logins the engine counted for ``user`` (each logs ENGINE-27001 with the lock)."""
    text = Path(engine.info.log_file).read_text(errors="replace")
    return text.count(f"ENGINE-27001 The user with id '{user}' is locked")


def test_spaced_wrong_logins_slow_a_user_down_but_never_lock_it_for_good(
    https_engine: Engine, admin: httpx.Client, trust: ssl.SSLContext
) -> None:
    """Camunda's default locks a user for good at the 10th counted wrong login; here a dozen
    leave the right password working once the (here 1 s) delay has passed."""
    user, password = f"throttled{uuid.uuid4().hex[:8]}", "right-password"
    created = admin.post(
        "/user/create",
        json={"profile": {"id": user}, "credentials": {"password": password}},
    )
    assert created.status_code == 204, created.text
    url = f"{https_engine.rest_url}/process-definition/count"
    with httpx.Client(verify=trust, timeout=30) as client:
        deadline = time.monotonic() + 120
        while _counted_failures(https_engine, user) < 12:
            assert time.monotonic() < deadline, "the engine stopped counting wrong logins"
            assert client.get(url, auth=(user, "wrong")).status_code == 401
            time.sleep(0.3)  # an attacker's pace: attempts within the 1 s lock do not count
        works = wait_for(
            lambda: client.get(url, auth=(user, password)).status_code == 200,
            timeout=30,
            what="the right password to work again",
        )
    assert works
    assert "permanently locked" not in Path(https_engine.info.log_file).read_text()
