from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from camunda_relay import bundled_engine
from camunda_relay.cli import cli
from camunda_relay.errors import ConfigurationError


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "engine"
    (project / "src" / "main").mkdir(parents=True)
    (project / "pom.xml").write_text("<project/>")
    (project / "src" / "main" / "App.java").write_text("class App {}")
    return project


def _age(path: Path, seconds: float) -> None:
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def test_needs_build_when_jar_missing_or_older_than_a_source(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert bundled_engine.needs_build(project)
    jar = bundled_engine.jar_path(project)
    jar.parent.mkdir()
    for source in [project / "pom.xml", project / "src" / "main" / "App.java"]:
        _age(source, 100)
    jar.write_bytes(b"jar")
    assert not bundled_engine.needs_build(project)
    (project / "src" / "main" / "App.java").write_text("class App { int x; }")
    os.utime(project / "src" / "main" / "App.java")
    _age(jar, 10)
    assert bundled_engine.needs_build(project)


def test_missing_project_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(bundled_engine.EngineBuildError, match="no engine project"):
        bundled_engine.ensure_built(tmp_path / "nowhere")


def test_stop_ends_a_process_and_reports_an_absent_one() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert bundled_engine.pid_alive(process.pid)
        assert bundled_engine.stop(process.pid, grace=5)
        assert process.wait(timeout=5) is not None
        assert not bundled_engine.stop(process.pid)
    finally:
        process.kill()
        process.wait()


def test_a_port_another_program_holds_is_one_line_before_java_starts(tmp_path: Path) -> None:
    with socket.socket() as occupied:
        occupied.bind(("127.0.0.1", 0))
        occupied.listen()
        port = occupied.getsockname()[1]
        options = bundled_engine.EngineOptions(port=port, state_dir=tmp_path / "state")
        with pytest.raises(bundled_engine.EngineStartError) as raised:
            bundled_engine.start(options, jar=tmp_path / "no-such.jar")  # never run
    message = str(raised.value)
    assert message == (
        f"port {port} on 127.0.0.1 is in use (Address already in use): choose another "
        "with --port, or stop the program that holds it"
    )
    assert not (tmp_path / "state").exists(), "nothing is created for an engine that cannot start"


@pytest.mark.engine
def test_start_failure_carries_the_log_tail(engine_jar: Path, tmp_path: Path) -> None:
    unreachable = bundled_engine.Postgres(
        jdbc_url=f"jdbc:postgresql://127.0.0.1:{_closed_port()}/camunda", user="u", password="p"
    )
    options = bundled_engine.EngineOptions(
        port=_closed_port(), state_dir=tmp_path, postgres=unreachable, ready_timeout=150
    )
    with pytest.raises(bundled_engine.EngineStartError) as raised:
        bundled_engine.start(options, jar=engine_jar)
    message = str(raised.value)
    assert "before it was ready" in message
    assert str(options.log_file) in message
    assert "\tat " not in message, "Java stack frames are left out of the tail"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- a stale engine.json ------------------------------------------------------------------------


def _record(state: Path, pid: int, **extra: object) -> None:
    state.mkdir(parents=True, exist_ok=True)
    info = {"pid": pid, "port": 1, "data_dir": "d", "log_file": "l", "database": "h2-file"}
    (state / bundled_engine.INFO_FILE).write_text(json.dumps({**info, **extra}))


@pytest.fixture
def unrelated() -> Iterator[subprocess.Popen[bytes]]:
    """A real process that is not the engine, whose pid a stale record names."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait()


def test_down_with_a_stale_record_signals_nothing_and_removes_it(
    tmp_path: Path, unrelated: subprocess.Popen[bytes]
) -> None:
    _record(tmp_path, unrelated.pid)
    result = CliRunner().invoke(cli, ["engine", "down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "engine not running" in result.stdout
    assert f"removed a stale engine record (pid {unrelated.pid} is not" in result.stderr
    assert unrelated.poll() is None, "the unrelated process was signalled"
    assert not (tmp_path / bundled_engine.INFO_FILE).exists()


def test_status_and_up_with_a_stale_record_do_not_call_it_running(
    tmp_path: Path, unrelated: subprocess.Popen[bytes]
) -> None:
    _record(tmp_path, unrelated.pid)
    status = CliRunner().invoke(cli, ["engine", "status", "--state-dir", str(tmp_path)])
    assert status.exit_code == 3
    assert "engine not running" in status.stdout
    _record(tmp_path, unrelated.pid)
    with socket.socket() as occupied:  # so that `up` stops before it would start Java
        occupied.bind(("127.0.0.1", 0))
        occupied.listen()
        port = str(occupied.getsockname()[1])
        up = CliRunner().invoke(cli, ["engine", "up", "--port", port, "--state-dir", str(tmp_path)])
    assert up.exit_code == 1
    assert "already running" not in up.output
    assert up.stderr.splitlines()[-1].startswith(f"Error: port {port} on 127.0.0.1 is in use")
    assert unrelated.poll() is None


def test_our_engine_is_told_by_its_command_line_and_start_time(tmp_path: Path) -> None:
    lookalike = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", bundled_engine.JAR_NAME]
    )
    try:
        # Popen returns once the child is forked, maybe before it runs Python: until then its
        # command line is this process's (a busy machine showed it).
        command = Path(f"/proc/{lookalike.pid}/cmdline")
        deadline = time.monotonic() + 30
        while bundled_engine.JAR_NAME.encode() not in command.read_bytes():
            assert time.monotonic() < deadline, "the lookalike never ran"
            time.sleep(0.01)
        started = bundled_engine._start_time(lookalike.pid)
        assert started is not None
        info = bundled_engine.EngineInfo(lookalike.pid, 1, "d", "l", "h2-file", started=started)
        assert bundled_engine.is_our_engine(info)
        reused = dataclasses.replace(info, started=started - 1)  # the pid of a later process
        assert not bundled_engine.is_our_engine(reused)
    finally:
        lookalike.kill()
        lookalike.wait()
    assert not bundled_engine.is_our_engine(info), "a dead process is not the engine"


def test_the_worker_password_is_made_once_random_and_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = bundled_engine.worker_password(state)
    assert len(first) >= 24
    assert (state / "worker-password").stat().st_mode & 0o777 == 0o600
    assert bundled_engine.worker_password(state) == first
    assert bundled_engine.read_worker_password(state) == first
    assert bundled_engine.worker_password(tmp_path / "other") != first
    assert bundled_engine.read_worker_password(tmp_path / "none") is None


def test_the_engine_gets_its_worker_user_and_no_inherited_tls_or_worker_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAMUNDA_TLS_KEYSTORE", "inherited.p12")
    monkeypatch.setenv("CAMUNDA_WORKER_PASSWORD", "inherited")
    options = bundled_engine.EngineOptions(state_dir=tmp_path)
    env = bundled_engine._engine_env(options)
    assert env["CAMUNDA_WORKER_USER"] == bundled_engine.WORKER_USER
    assert env["CAMUNDA_WORKER_PASSWORD"] == bundled_engine.worker_password(tmp_path)
    assert env["CAMUNDA_BIND_ADDRESS"] == "127.0.0.1"
    assert "CAMUNDA_TLS_KEYSTORE" not in env
    tls = bundled_engine.Tls(certificate=Path("c.pem"), key=Path("k.pem"))
    env = bundled_engine._engine_env(bundled_engine.EngineOptions(state_dir=tmp_path, tls=tls))
    assert env["CAMUNDA_TLS_CERTIFICATE"] == str(Path("c.pem").resolve())
    assert env["CAMUNDA_TLS_KEY"] == str(Path("k.pem").resolve())


@pytest.mark.parametrize(
    ("environ", "base_url"),
    [
        ({}, "http://127.0.0.1:8080"),
        ({"CAMUNDA_BIND_ADDRESS": "0.0.0.0"}, "http://127.0.0.1:8080"),  # noqa: S104
        ({"CAMUNDA_BIND_ADDRESS": "::1"}, "http://[::1]:8080"),
        ({"CAMUNDA_BIND_ADDRESS": "localhost"}, "http://localhost:8080"),
        (
            {"CAMUNDA_TLS_CERTIFICATE": "c.pem", "CAMUNDA_TLS_KEY": "k.pem"},
            "https://127.0.0.1:8080",
        ),
        ({"CAMUNDA_TLS_KEYSTORE": "s.p12"}, "https://127.0.0.1:8080"),
    ],
)
def test_options_from_the_environment_say_where_the_engine_answers(
    environ: dict[str, str], base_url: str, tmp_path: Path
) -> None:
    options = bundled_engine.EngineOptions.from_environment(
        environ, port=8080, state_dir=tmp_path, user="u", password="p"
    )
    assert options.base_url == base_url


def test_bearer_tokens_and_worker_tenants_from_the_environment_reach_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAMUNDA_JWT_AUDIENCE", "inherited")
    monkeypatch.setenv("CAMUNDA_WORKER_TENANTS", "inherited")
    environ = {
        "CAMUNDA_JWT_ISSUER_URI": " https://idp.example/realms/relay ",
        "CAMUNDA_JWT_USER_CLAIM": "azp",
        "CAMUNDA_JWT_ALLOWED_CLIENTS": " relayworker1,,relayworker2, relayworker1",
        "CAMUNDA_WORKER_TENANTS": "tenanta, tenantb,,tenanta",
    }
    options = bundled_engine.EngineOptions.from_environment(
        environ, port=8080, state_dir=tmp_path, user="u", password="p"
    )
    assert options.jwt == bundled_engine.Jwt(
        "https://idp.example/realms/relay", "", "azp", ("relayworker1", "relayworker2")
    )
    assert options.worker_tenants == ("tenanta", "tenantb")
    env = bundled_engine._engine_env(options)
    assert env["CAMUNDA_JWT_ISSUER_URI"] == "https://idp.example/realms/relay"
    assert env["CAMUNDA_JWT_AUDIENCE"] == ""  # not the inherited one
    assert env["CAMUNDA_JWT_USER_CLAIM"] == "azp"
    assert env["CAMUNDA_JWT_ALLOWED_CLIENTS"] == "relayworker1,relayworker2"
    assert env["CAMUNDA_WORKER_TENANTS"] == "tenanta,tenantb"
    plain = bundled_engine._engine_env(bundled_engine.EngineOptions(state_dir=tmp_path))
    assert not [name for name in plain if name.startswith("CAMUNDA_JWT_")]
    assert "CAMUNDA_WORKER_TENANTS" not in plain


@pytest.mark.parametrize(
    "environ",
    [
        {"CAMUNDA_JWT_ISSUER_URI": "https://idp.example/realms/relay"},
        {
            "CAMUNDA_JWT_ISSUER_URI": "https://idp.example/realms/relay",
            "CAMUNDA_JWT_AUDIENCE": " ",
            "CAMUNDA_JWT_ALLOWED_CLIENTS": " , ",
        },
    ],
)
def test_an_issuer_without_an_audience_or_allowed_clients_is_refused(
    environ: dict[str, str], tmp_path: Path
) -> None:
    """Without either every token the issuer signs, for any client of the realm, logs in."""
    with pytest.raises(ConfigurationError) as refused:
        bundled_engine.EngineOptions.from_environment(
            environ, port=8080, state_dir=tmp_path, user="u", password="p"
        )
    assert str(refused.value).startswith(
        "CAMUNDA_JWT_ISSUER_URI is set without CAMUNDA_JWT_AUDIENCE or "
        "CAMUNDA_JWT_ALLOWED_CLIENTS: "
    )
    assert "\n" not in str(refused.value)


def test_an_audience_or_allowed_clients_alone_is_enough(tmp_path: Path) -> None:
    issuer = {"CAMUNDA_JWT_ISSUER_URI": "https://idp.example/realms/relay"}
    for setting in ({"CAMUNDA_JWT_AUDIENCE": "engine"}, {"CAMUNDA_JWT_ALLOWED_CLIENTS": "w1"}):
        options = bundled_engine.EngineOptions.from_environment(
            issuer | setting, port=8080, state_dir=tmp_path, user="u", password="p"
        )
        assert options.jwt is not None


def test_a_worker_tenant_id_of_other_characters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"tenant id 'tenant-a' may have letters"):
        bundled_engine.EngineOptions.from_environment(
            {"CAMUNDA_WORKER_TENANTS": "ok,tenant-a"},
            port=8080,
            state_dir=tmp_path,
            user="u",
            password="p",
        )


def test_a_refusal_is_read_from_this_starts_part_of_the_log(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text(f"{bundled_engine.REFUSAL}an old reason\n")
    offset = log.stat().st_size
    with log.open("a") as out:
        out.write(f"banner\n{bundled_engine.REFUSAL}the new reason\n")
    assert bundled_engine._refusal(log, offset) == "the new reason"
    assert bundled_engine._refusal(log, log.stat().st_size) is None


def test_the_demos_worker_logs_in_as_the_worker_user_of_the_engine_recorded_here(
    tmp_path: Path,
) -> None:
    from camunda_relay.cli.demo import worker_settings
    from camunda_relay.settings import Settings

    info = bundled_engine.EngineInfo(
        pid=os.getpid(), port=18080, data_dir=str(tmp_path / "data"), log_file="x", database="h2",
        worker_user=bundled_engine.WORKER_USER,
    )  # fmt: skip
    (tmp_path / "engine.json").write_text(json.dumps(dataclasses.asdict(info)))
    password = bundled_engine.worker_password(tmp_path)
    admin = Settings(
        url="http://localhost:18080/engine-rest", user="admin", password="a", state_dir=tmp_path
    )
    worker = worker_settings(admin)
    assert (worker.user, worker.password) == (bundled_engine.WORKER_USER, password)
    elsewhere = dataclasses.replace(admin, url="http://localhost:18081/engine-rest")
    assert worker_settings(elsewhere) == elsewhere  # another engine: the configured user
    (tmp_path / "worker-password").unlink()
    assert worker_settings(admin) == admin
