"""The CLI's log formats: text for a person, JSON lines for a collector (ids as fields)."""

from __future__ import annotations

import io
import json
import logging

from camunda_relay.cli import _logging
from camunda_relay.task import Task


def _logged(log_format: str, emit: str) -> str:
    stream = io.StringIO()
    _logging.configure("INFO", log_format)
    root = logging.getLogger("camunda_relay")
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    log = logging.getLogger("camunda_relay.worker.test")
    task = Task(
        id="task-1",
        topic="messageSending",
        worker_id="w",
        process_instance_id="pi-1",
        variables={"secret": "canary-value"},
    )
    try:
        if emit == "task":
            log.warning("completing failed (%s)", "EngineUnavailable", extra=task.log_context())
        else:
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                log.exception("the loop failed")
    finally:
        root.handlers[:] = []
    return stream.getvalue()


def test_json_lines_carry_the_task_ids_as_fields_and_no_variable_value() -> None:
    text = _logged("json", "task")
    assert text.count("\n") == 1
    entry = json.loads(text)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "camunda_relay.worker.test"
    assert entry["message"] == "completing failed (EngineUnavailable)"
    assert entry["task_id"] == "task-1"
    assert entry["process_instance_id"] == "pi-1"
    assert entry["topic"] == "messageSending"
    assert entry["job_id"] == "task-1"
    assert entry["time"].endswith("+00:00")
    assert "canary-value" not in text


def test_an_exception_stays_inside_its_one_json_line() -> None:
    text = _logged("json", "exception")
    assert text.count("\n") == 1
    entry = json.loads(text)
    assert "RuntimeError: boom" in entry["exception"]


def test_text_lines_append_the_ids() -> None:
    text = _logged("text", "task")
    assert "completing failed (EngineUnavailable) [topic=messageSending task_id=task-1" in text
    assert "canary-value" not in text
