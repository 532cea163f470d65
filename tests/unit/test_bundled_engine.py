from __future__ import annotations

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
