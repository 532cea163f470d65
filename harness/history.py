"""The operation history (Jepsen style): one JSON line per engine call the worker made.

The fault proxy writes it, so it sees exactly what the worker sent and what came back (or
did not). Each line::

    {"op": "POST /external-task/{id}/complete", "key": "<task id>", "worker": "<worker id>",
     "invoke_t": 1.0, "end_t": 1.2, "result": "ok" | "fail" | "info",
     "http_status": 204, "err_type": null, "fault": null, "tasks": null}

``result`` is ``ok`` for a 2xx relayed to the worker, ``fail`` for an error answer relayed
(or injected), ``info`` when the worker cannot know the outcome (response dropped, truncated,
connection reset or blackholed). Times are ``time.time()`` seconds. No variable value and no
credential is ever recorded: only ids taken from the path or the body.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Operation", "OperationLog", "read", "template"]


@dataclass
class Operation:
    op: str
    key: str | None
    worker: str | None
    invoke_t: float
    end_t: float | None = None
    result: str = "info"
    http_status: int | None = None
    err_type: str | None = None
    fault: str | None = None
    tasks: int | None = None  # fetchAndLock: how many tasks the engine locked and sent


def template(method: str, path: str) -> tuple[str, str | None]:
    """``("POST /external-task/{id}/complete", "<id>")`` for a request line's method and path."""
    path = path.split("?", 1)[0]
    bare = path.removeprefix("/engine-rest")
    match = re.match(r"^/external-task/([^/]+)/(\w+)$", bare)
    if match and match.group(1) != "fetchAndLock":
        return f"{method} /external-task/{{id}}/{match.group(2)}", match.group(1)
    match = re.match(r"^/(execution|process-definition|process-instance)/([^/]+)(/.*)?$", bare)
    if match and match.group(2) not in ("key", "count"):
        return f"{method} /{match.group(1)}/{{id}}{match.group(3) or ''}", match.group(2)
    match = re.match(r"^/history/(process-instance|external-task-log)/([^/]+)$", bare)
    if match and match.group(2) != "count":
        return f"{method} /history/{match.group(1)}/{{id}}", match.group(2)
    return f"{method} {bare}", None


class OperationLog:
    """Thread-safe JSONL writer (the proxy runs on its own thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._handle = path.open("a", encoding="utf-8")

    def write(self, operation: Operation) -> None:
        line = json.dumps(asdict(operation), separators=(",", ":"))
        with self._lock:
            self._handle.write(line + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()


def read(path: Path) -> Iterator[dict[str, Any]]:
    """The operations of a history file, in the order they ended."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
