"""``camunda-relay engine up|status|down`` as a user runs them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from camunda_relay.engine_options import NO_AUDIENCE
from tests.support.engine import FLAVOUR
from tests.support.tools import free_port

# engine up builds and runs the flavour under test (CAMUNDA_RELAY_TEST_ENGINE).
ENGINE = f"{FLAVOUR.name}:{FLAVOUR.version}"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "camunda_relay.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_engine_up_status_down(engine_jar: Path, tmp_path: Path) -> None:
    port = str(free_port())
    state = str(tmp_path / "state")
    secret = {"CAMUNDA_USER": "cliuser", "CAMUNDA_PASSWORD": "canary-cli-secret"}
    up = _cli("engine", "up", "--port", port, "--state-dir", state, "--engine", ENGINE, env=secret)
    try:
        assert up.returncode == 0, up.stderr
        assert f"http://127.0.0.1:{port}/engine-rest" in up.stdout
        assert f"{FLAVOUR.webapp_path}/cockpit/default/" in up.stdout
        assert f"{FLAVOUR.webapp_path}/tasklist/default/" in up.stdout
        assert f"engine   : {FLAVOUR.title}" in up.stdout
        assert ("no Json variables" in up.stdout) is not FLAVOUR.json_variables
        assert "cliuser" in up.stdout
        assert "canary-cli-secret" not in up.stdout + up.stderr
        _assert_owner_only(Path(state))
        status = _cli("engine", "status", "--state-dir", state)
        assert status.returncode == 0
        assert "ready" in status.stdout
    finally:
        down = _cli("engine", "down", "--state-dir", state)
    assert down.returncode == 0
    assert "stopped" in down.stdout
    after = _cli("engine", "status", "--state-dir", state)
    assert after.returncode == 3
    assert "not running" in after.stdout


def test_unknown_setting_is_one_clear_line(tmp_path: Path) -> None:
    result = _cli("engine", "status", "--state-dir", str(tmp_path), env={"CAMUNDA_PASWORD": "x"})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "Error: unknown setting CAMUNDA_PASWORD in the environment"
    ]


def _assert_owner_only(state: Path) -> None:
    """The state folder, the H2 database, the log and engine.json: the owner's only."""
    modes = {
        str(path.relative_to(state)): stat.S_IMODE(path.stat().st_mode)
        for path in [state, *state.rglob("*")]
    }
    assert any(name.endswith(".mv.db") for name in modes), modes
    assert {"engine.log", "engine.json", "data"} <= set(modes)
    for name, mode in modes.items():
        folder = name == "." or (state / name).is_dir()
        assert mode == (0o700 if folder else 0o600), (name, oct(mode))


def test_engine_up_refuses_the_default_password_off_loopback_in_one_line(
    engine_jar: Path, tmp_path: Path
) -> None:
    """Refused before anything starts: no port is bound, no database made. The warning about
    the REST API's switched-off authentication comes first, in the log."""
    state = tmp_path / "state"
    env = {"CAMUNDA_BIND_ADDRESS": "0.0.0.0", "CAMUNDA_REST_BASIC_AUTH": "false"}  # noqa: S104
    env = {**env, "CAMUNDA_USER": "", "CAMUNDA_PASSWORD": ""}
    up = _cli(
        "engine",
        "up",
        "--port",
        str(free_port()),
        "--state-dir",
        str(state),
        "--engine",
        ENGINE,
        env=env,
    )
    assert up.returncode == 1
    assert up.stderr.strip().splitlines() == [
        "Error: the engine refused to start: the engine would listen on 0.0.0.0, not only on "
        "loopback, and the administrator 'demo' has the default password: set CAMUNDA_PASSWORD"
    ]
    log = (state / "engine.log").read_text()
    assert " WARN " in log
    assert "CAMUNDA_REST_BASIC_AUTH=false" in log
    assert not (state / "data" / "camunda.mv.db").exists()


def test_bad_tls_settings_are_refused_in_one_line(engine_jar: Path, tmp_path: Path) -> None:
    (tmp_path / "server.pem").write_text("not a certificate\n")
    env = {"CAMUNDA_TLS_CERTIFICATE": str(tmp_path / "server.pem"), "CAMUNDA_TLS_KEY": ""}
    up = _cli(
        "engine",
        "up",
        "--port",
        str(free_port()),
        "--state-dir",
        str(tmp_path),
        "--engine",
        ENGINE,
        env=env,
    )
    assert up.returncode == 1
    assert up.stderr.strip().splitlines() == [
        "Error: the engine refused to start: CAMUNDA_TLS_CERTIFICATE and CAMUNDA_TLS_KEY go "
        "together: set both"
    ]


def test_bad_jwt_and_tenant_settings_are_refused_in_one_line(
    engine_jar: Path, tmp_path: Path
) -> None:
    def up(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        where = ["--port", str(free_port()), "--state-dir", str(tmp_path)]
        return _cli("engine", "up", *where, "--engine", ENGINE, env=env)

    issuer = up(
        {"CAMUNDA_JWT_ISSUER_URI": "keycloak.example/realms/relay", "CAMUNDA_JWT_AUDIENCE": "e"}
    )
    audience = up({"CAMUNDA_JWT_ISSUER_URI": "https://keycloak.example/realms/relay"})
    tenants = up({"CAMUNDA_WORKER_TENANTS": "tenanta,tenant-b"})
    assert issuer.returncode == audience.returncode == tenants.returncode == 1
    assert issuer.stderr.strip().splitlines() == [
        "Error: the engine refused to start: CAMUNDA_JWT_ISSUER_URI must be an http:// or "
        "https:// URL: keycloak.example/realms/relay"
    ]
    assert audience.stderr.strip().splitlines() == [f"Error: {NO_AUDIENCE}"]
    assert tenants.stderr.strip().splitlines() == [
        "Error: CAMUNDA_WORKER_TENANTS: tenant id 'tenant-b' may have letters and digits only"
    ]
