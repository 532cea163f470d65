"""The worker command's HTTP server against the real engine: metrics after real work, the
probes and ``worker --check``; with the engine gone the worker turns unready but stays live;
JSON log lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from camunda_relay import bundled_engine
from tests.support.engine import (
    PASSWORD,
    USER,
    Engine,
    assert_finished_once,
    start_engine,
    start_instance,
    wait_for,
)
from tests.support.tools import free_port, run_cli


def _worker(engine: Engine, journal: Path, port: int, **extra: str) -> subprocess.Popen[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")},
        "CAMUNDA_JOURNAL": str(journal),
        "CAMUNDA_URL": engine.rest_url,
        "CAMUNDA_USER": USER,
        "CAMUNDA_PASSWORD": PASSWORD,
        "CAMUNDA_HTTP_PORT": str(port),
        "CAMUNDA_LONG_POLL": "1",
        "CAMUNDA_REQUEST_TIMEOUT": "2",
        "CAMUNDA_SHUTDOWN_GRACE": "5",
        "SAMPLE_WORK_SECONDS": "0.2",
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "camunda_relay.cli", "worker", "camunda_relay.examples.conception"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _get(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except httpx.HTTPError:
        return None


def _status(port: int, path: str) -> int | None:
    answer = _get(port, path)
    return answer.status_code if answer is not None else None


def _stop(worker: subprocess.Popen[str]) -> str:
    worker.terminate()
    try:
        _, stderr = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        _, stderr = worker.communicate()
    return stderr


def test_metrics_probes_and_check_of_a_working_worker(
    engine: Engine, rest: httpx.Client, tmp_path: Path
) -> None:
    port = free_port()
    worker = _worker(engine, tmp_path / "journal.sqlite3", port, CAMUNDA_LOG_FORMAT="json")
    try:
        wait_for(lambda: _status(port, "/readyz") == 200, timeout=120, what="the worker ready")
        instance_id = start_instance(rest, f"http-{uuid.uuid4().hex[:8]}")
        wait_for(
            lambda: (
                rest.get("/history/process-instance/" + instance_id).json().get("state")
                == "COMPLETED"
            ),
            timeout=120,
            what="the instance finished",
        )
        metrics = _get(port, "/metrics")
        env = {"CAMUNDA_HTTP_PORT": str(port)}
        ready = run_cli("worker", "--check", env=env, timeout=60)
        live = run_cli("worker", "--check", "live", env=env, timeout=60)
        healthz = _get(port, "/healthz")
    finally:
        stderr = _stop(worker)
    assert_finished_once(rest, instance_id)
    assert metrics is not None
    text = metrics.text
    assert "camunda_relay_replies_delivered_total" in text
    delivered = [
        line for line in text.splitlines() if line.startswith("camunda_relay_replies_delivered")
    ]
    assert float(delivered[0].rsplit(" ", 1)[1]) >= 1
    assert "camunda_relay_reconcile_errors_total" in text  # the reconciler's, same registry
    assert (ready.returncode, ready.stdout) == (0, "ready\n")
    assert (live.returncode, live.stdout) == (0, "live\n")
    assert healthz is not None
    assert healthz.json() == {"ok": True, "problems": []}
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines
    entries = [json.loads(line) for line in lines]  # every line one JSON object
    assert any(entry["message"].startswith("worker ") for entry in entries)
    assert PASSWORD not in stderr


def test_an_engine_outage_makes_the_worker_unready_but_not_dead(
    engine_jar: Path, tmp_path: Path
) -> None:
    own = start_engine(engine_jar, tmp_path / "engine", free_port())
    port = free_port()
    worker = _worker(own, tmp_path / "journal.sqlite3", port)
    try:
        wait_for(lambda: _status(port, "/readyz") == 200, timeout=120, what="the worker ready")
        bundled_engine.stop(own.info.pid)
        # 1 s long poll + 2 s request timeout + 30 s: unready about half a minute later.
        wait_for(lambda: _status(port, "/readyz") == 503, timeout=180, what="unready")
        readyz = _get(port, "/readyz")
        healthz = _get(port, "/healthz")
        env = {"CAMUNDA_HTTP_PORT": str(port)}
        ready = run_cli("worker", "--check", env=env, timeout=60)
        live = run_cli("worker", "--check", "live", env=env, timeout=60)
        still_running = worker.poll() is None
    finally:
        _stop(worker)
        bundled_engine.stop(own.info.pid)
    assert still_running
    assert readyz is not None
    assert readyz.json()["problems"][0].startswith("the engine last answered")
    assert healthz is not None
    assert healthz.status_code == 200
    assert ready.returncode == 1
    assert ready.stdout.startswith("not ready: the engine last answered")
    assert (live.returncode, live.stdout) == (0, "live\n")
