from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from camunda_relay import bundled_engine
from camunda_relay.cli import cli


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
