"""H2 in file mode: an instance waiting at the catch event survives an engine restart."""

from __future__ import annotations

import uuid
from pathlib import Path

from camunda_relay import bundled_engine
from tests.support.engine import (
    MESSAGE,
    assert_finished_once,
    fetch_and_lock,
    start_engine,
    start_instance,
    wait_for,
    waiting_for_message,
)
from tests.support.tools import free_port


def test_waiting_instance_survives_restart(engine_jar: Path, tmp_path: Path) -> None:
    port = free_port()
    first = start_engine(engine_jar, tmp_path, port)
    business_key = f"restart-{uuid.uuid4()}"
    try:
        with first.client() as rest:
            instance_id = start_instance(rest, business_key)
            (task,) = wait_for(lambda: fetch_and_lock(rest, "restart-worker"), what="the task")
            done = rest.post(
                f"/external-task/{task['id']}/complete", json={"workerId": "restart-worker"}
            )
            assert done.status_code == 204
            assert waiting_for_message(rest, instance_id)
    finally:
        assert bundled_engine.stop(first.info.pid)

    second = start_engine(engine_jar, tmp_path, port)
    try:
        with second.client() as rest:
            assert waiting_for_message(rest, instance_id)
            deployments = rest.get("/deployment").json()
            assert len(deployments) == 1, "an unchanged seed process must not be redeployed"
            response = rest.post(
                "/message", json={"messageName": MESSAGE, "businessKey": business_key}
            )
            assert response.status_code == 204, response.text
            assert_finished_once(rest, instance_id)
    finally:
        bundled_engine.stop(second.info.pid)
