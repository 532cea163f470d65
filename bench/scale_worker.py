"""camunda-relay in reply mode whose work waits: for the scale run (10,000 pending replies).

Each job's work awaits a timer (``asyncio.wait_for`` with ``BENCH_HOLD_SECONDS``, default one
hour) that SIGUSR1 to the worker process ends early for every job at once: the runner
measures the idle worker while all jobs wait, then sends the signal and times the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from bench.marks import mark
from camunda_relay import Router, Task

router = Router()
_released: asyncio.Event | None = None


def _release_event() -> asyncio.Event:
    global _released
    if _released is None:
        _released = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _released.set)
    return _released


@router.task("messageSending", reply="sample_response")
async def send_message(task: Task) -> None:
    mark(task.process_instance_id)
    hold = float(os.environ.get("BENCH_HOLD_SECONDS", "3600"))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_release_event().wait(), timeout=hold)
