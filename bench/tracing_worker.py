"""A reply topic whose handler returns at once (bench.tracing_cost): what is measured is the
worker's own cost per job, with tracing on or off.

    camunda-relay worker bench.tracing_worker
"""

from __future__ import annotations

from camunda_relay import Router, Task

router = Router()


@router.task("messageSending", reply="sample_response")
async def send_message(task: Task) -> dict[str, object]:
    return {"var1": 1}
