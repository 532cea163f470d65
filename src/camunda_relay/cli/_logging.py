"""Log set-up for the CLI (the library itself never configures logging)."""

from __future__ import annotations

import logging
import sys

_CONTEXT = ("topic", "task_id", "process_instance_id", "job_id")


class _ContextFormatter(logging.Formatter):
    """Appends the task identifiers a record carries in ``extra`` (never variable values)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in _CONTEXT if hasattr(record, name)
        )
        return f"{text} [{context}]" if context else text


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ContextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger("camunda_relay")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
