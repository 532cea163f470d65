"""What a person sees: start the seed process in Tasklist, watch it finish while the worker runs."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import TIMEOUT_MS, WorkerProcess
from tests.support.engine import (
    PASSWORD,
    PROCESS_KEY,
    USER,
    Engine,
    assert_finished_once,
    historic_instance,
    wait_for,
)

pytestmark = pytest.mark.browser

PROCESS_NAME = "Correlation Message"
# Generous: a worker stopped by an earlier test module can hold the task for one lock duration
# (60 s by default) before this module's worker gets it.
FINISH_TIMEOUT = 120.0


def _log_in(page: Page, url: str) -> None:
    page.goto(url)
    page.get_by_placeholder("Username").fill(USER)
    page.get_by_placeholder("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def _start_in_tasklist(page: Page, business_key: str) -> None:
    page.get_by_role("link", name="Start process").click()
    page.get_by_placeholder("Search by process name.").fill(PROCESS_NAME)
    page.get_by_role("link", name=PROCESS_NAME, exact=True).click()
    page.locator("#business-key-field").fill(business_key)
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.get_by_text("The process has been started.").first).to_be_visible(
        timeout=TIMEOUT_MS
    )


def _instances_with(rest: httpx.Client, business_key: str) -> list[dict[str, Any]]:
    """Running or ended: the worker may finish the instance before we look."""
    response = rest.get(
        "/history/process-instance", params={"processInstanceBusinessKey": business_key}
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def _reply_variable(rest: httpx.Client, instance_id: str, name: str) -> object:
    response = rest.get(
        "/history/variable-instance",
        params={"processInstanceId": instance_id, "variableName": name},
    )
    assert response.status_code == 200, response.text
    (variable,) = response.json()
    return variable["value"]


def test_instance_started_in_tasklist_finishes_while_the_worker_runs(
    engine: Engine, rest: httpx.Client, worker: WorkerProcess, page: Page
) -> None:
    business_key = f"tasklist-{uuid.uuid4()}"
    _log_in(page, engine.info.tasklist_url)
    _start_in_tasklist(page, business_key)

    (instance,) = wait_for(
        lambda: _instances_with(rest, business_key), what="the instance started in Tasklist"
    )
    assert instance["processDefinitionKey"] == PROCESS_KEY
    assert instance["startUserId"] == USER
    instance_id = instance["id"]

    def finished() -> bool:
        worker.assert_running()
        return bool(historic_instance(rest, instance_id)["state"] == "COMPLETED")

    wait_for(finished, timeout=FINISH_TIMEOUT, what="the worker to finish the instance")
    worker.assert_running()
    assert_finished_once(rest, instance_id)
    # The reply carried the work's result for this very instance.
    assert _reply_variable(rest, instance_id, "processed_for") == business_key

    # Cockpit (same login) says so too: the instance's page reports it as completed.
    page.goto(f"{engine.info.cockpit_url}#/process-instance/{instance_id}/runtime")
    expect(
        page.get_by_text(f"Process instance with ID {instance_id} has been completed")
    ).to_be_visible(timeout=TIMEOUT_MS)
