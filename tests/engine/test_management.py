"""The engine application's management port: health probes and Prometheus metrics, nothing
else of the actuator, and none of it on the main port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from camunda_relay import bundled_engine
from tests.support.engine import Engine, start_engine
from tests.support.tools import free_port


@pytest.fixture(scope="module")
def managed(engine_jar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    running = start_engine(
        engine_jar,
        tmp_path_factory.mktemp("managed-engine"),
        free_port(),
        management_port=free_port(),
    )
    yield running
    bundled_engine.stop(running.info.pid)


def _management(engine: Engine) -> httpx.Client:
    url = engine.options.management_url
    assert url is not None
    return httpx.Client(base_url=url, timeout=30)


def test_liveness_and_readiness_groups_answer_up(managed: Engine) -> None:
    with _management(managed) as client:
        liveness = client.get("/actuator/health/liveness")
        readiness = client.get("/actuator/health/readiness")
    assert liveness.status_code == 200
    assert liveness.json()["status"] == "UP"
    assert readiness.status_code == 200
    body = readiness.json()
    assert body["status"] == "UP"
    assert set(body["components"]) == {"readinessState", "db", "jobExecutor"}
    assert all(part["status"] == "UP" for part in body["components"].values())
    assert "details" not in body["components"]["db"]


def test_prometheus_metrics_are_served(managed: Engine) -> None:
    with _management(managed) as client:
        answer = client.get("/actuator/prometheus")
    assert answer.status_code == 200
    assert "jvm_memory_used_bytes" in answer.text
    assert "hikaricp_connections" in answer.text


@pytest.mark.parametrize(
    "path",
    ["/actuator", "/actuator/env", "/actuator/beans", "/actuator/heapdump", "/actuator/info"],
)
def test_nothing_else_of_the_actuator_is_served(managed: Engine, path: str) -> None:
    with _management(managed) as client:
        assert client.get(path).status_code == 404


def test_the_main_port_serves_no_actuator(managed: Engine) -> None:
    with httpx.Client(base_url=managed.info.base_url, timeout=30) as client:
        answer = client.get("/actuator/health")
    assert answer.status_code != 200
    assert "UP" not in answer.text
