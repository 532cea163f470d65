from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from camunda_relay import bundled_engine


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


@pytest.mark.engine
def test_start_failure_carries_the_log_tail(engine_jar: Path, tmp_path: Path) -> None:
    with socket.socket() as occupied:
        occupied.bind(("127.0.0.1", 0))
        occupied.listen()
        port = occupied.getsockname()[1]
        options = bundled_engine.EngineOptions(port=port, state_dir=tmp_path, ready_timeout=120)
        with pytest.raises(bundled_engine.EngineStartError) as raised:
            bundled_engine.start(options, jar=engine_jar)
    message = str(raised.value)
    assert "before it was ready" in message
    assert str(port) in message
    assert "\tat " not in message, "Java stack frames are left out of the tail"


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
