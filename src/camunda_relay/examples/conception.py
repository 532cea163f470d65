"""The conception's PythonPod, written with camunda-relay.

The seed process hands work to topic ``messageSending`` and then waits for the message
``sample_response``. This worker completes the task at once (with the conception's
``{"var1": 1, "var2": "value"}``), does the long work in the background, and correlates
``sample_response`` to that very process instance when the work is done, with the work's
result. No ``time.sleep(2)`` guess: an early message is retried until the instance waits.

Run it::

    camunda-relay worker camunda_relay.examples.conception

``SAMPLE_WORK_SECONDS`` sets the simulated work time (default 2 seconds).
"""

from __future__ import annotations

import asyncio
import os

from camunda_relay import Reply, Router, Task

ACKNOWLEDGEMENT = {"var1": 1, "var2": "value"}


def make_router(work_seconds: float | None = None) -> Router:
    """The conception's worker; ``work_seconds`` defaults to ``SAMPLE_WORK_SECONDS`` or 2."""
    router = Router()

    @router.task(
        "messageSending",
        reply=Reply("sample_response", complete_variables=ACKNOWLEDGEMENT),
    )
    async def send_message(task: Task) -> dict[str, object]:
        """The long work; its result is sent with ``sample_response``."""
        seconds = work_seconds
        if seconds is None:
            seconds = float(os.environ.get("SAMPLE_WORK_SECONDS", "2"))
        await asyncio.sleep(seconds)
        return {"var1": 1, "var2": "value", "processed_for": task.business_key or task.id}

    return router


router = make_router()
