"""The worker of ``make e2e-tracing`` (harness.e2e_tracing): a reply topic and, after its
catch event, a plain topic downstream, each returning at once.

    camunda-relay worker harness.tracing_worker
"""

from __future__ import annotations

from camunda_relay import Router, Task

router = Router()


@router.task("traced-send", reply="traced_reply")
async def send(task: Task) -> dict[str, object]:
    return {"answer": "paid"}


@router.task("traced-next")
def next_step(task: Task) -> dict[str, object]:
    return {"shipped": True}
