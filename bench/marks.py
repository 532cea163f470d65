"""Handler-start marks: one line ``<process instance id> <epoch seconds>`` per task, appended
to the file named by ``BENCH_MARKS``. The runner compares them with the task's creation time
from the engine's history (the start of activity ``send_message``)."""

from __future__ import annotations

import os
import time
from typing import TextIO

_file: TextIO | None = None


def mark(process_instance_id: str) -> None:
    global _file
    if _file is None:
        path = os.environ.get("BENCH_MARKS")
        if not path:
            return
        _file = open(path, "a", buffering=1)  # noqa: SIM115 - kept open for the process
    _file.write(f"{process_instance_id} {time.time():.6f}\n")


def read(path: str) -> dict[str, float]:
    """First mark per process instance."""
    found: dict[str, float] = {}
    try:
        with open(path) as handle:
            for line in handle:
                parts = line.split()
                if len(parts) == 2 and parts[0] not in found:
                    found[parts[0]] = float(parts[1])
    except FileNotFoundError:
        pass
    return found


def count(path: str) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0
