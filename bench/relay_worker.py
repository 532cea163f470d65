"""camunda-relay in reply mode with no work: the handler only records that it started.

    CAMUNDA_URL=... CAMUNDA_USER=... CAMUNDA_PASSWORD=... CAMUNDA_JOURNAL=/tmp/j.sqlite3 \\
        python -m camunda_relay.cli worker bench.relay_worker
"""

from __future__ import annotations

from bench.marks import mark
from camunda_relay import Router, Task

router = Router()


@router.task("messageSending", reply="sample_response")
async def send_message(task: Task) -> None:
    mark(task.process_instance_id)
