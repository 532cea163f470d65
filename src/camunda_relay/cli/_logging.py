"""Log set-up for the CLI (the library itself never configures logging).

Two formats (``CAMUNDA_LOG_FORMAT``): ``text``, one line for a person with the task's
identifiers appended, and ``json``, one JSON object per line for a log collector, with the
identifiers as fields of their own. Either way a record carries only what the library put in
its message and the identifiers of ``extra`` (topic, task, process instance, job), never a
variable value or a credential: the library never puts one there.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from camunda_relay.tracing import log_ids

_CONTEXT = ("topic", "task_id", "process_instance_id", "job_id")


class _ContextFormatter(logging.Formatter):
    """Appends the task identifiers a record carries in ``extra`` (never variable values)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in _CONTEXT if hasattr(record, name)
        )
        return f"{text} [{context}]" if context else text


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the task
    identifiers the record carries, the current span's ``trace_id`` and ``span_id`` (tracing
    on), and the formatted exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = str(value)
        ids = log_ids()  # the current span's, while tracing is on
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return _ContextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def configure(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger("camunda_relay")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
