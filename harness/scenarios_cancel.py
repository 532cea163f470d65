"""The fault scenario S28 of FAULTS.md: instances deleted at random (as Cockpit or
``DELETE /process-instance/{id}`` does) while their work runs, while worker pods are killed.

It follows :mod:`harness.scenarios` (one engine, conditions waited on with deadlines, the
checker's invariants plus the scenario's own criterion) and is registered in its
``SCENARIOS``. The deleted instances leave the checker's instance list (they cannot finish);
what is checked of them is S28's own criterion: no message ever reached one (no successful
``POST /message`` for it in the operation history, which the fault proxy writes), and every
journal job of one ended ``cancelled`` (its work was cancelled, or its delivery found it
ended) or ``dropped`` (deleted before its task was completed). Every other instance finishes
once (I1-I3), with no incident (I4).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from harness import chaos
from harness.checker import Expectation, all_journal_rows
from harness.lab import Lab
from harness.scenarios import FINISH, Context, _finish, _ops, _run, _settle

__all__ = ["CANCEL_SCENARIOS"]

_ENDED_BY_CANCEL = ("cancelled", "dropped")


class Deleter:
    """Deletes ``doomed`` instances, one at a uniform random time within ``window`` s each
    (seeded); :attr:`deleted` holds those the engine deleted (204: it had not ended yet)."""

    def __init__(self, lab: Lab, doomed: Sequence[str], *, seed: int, window: float) -> None:
        self.lab = lab
        self.deleted: list[str] = []
        self.too_late: list[str] = []  # already ended (404)
        shuffled = random.Random(seed)
        self._at = sorted((shuffled.uniform(0, window), i) for i in doomed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="deleter")
        self._thread.start()

    def _loop(self) -> None:
        began = time.monotonic()
        for at, instance in self._at:
            if self._stop.wait(max(0.0, began + at - time.monotonic())):
                return
            response = self.lab.rest.delete(f"/process-instance/{instance}")
            (self.deleted if response.status_code == 204 else self.too_late).append(instance)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        self._stop.set()


def s28(ctx: Context) -> dict[str, Any]:
    """Instances deleted at random while their work runs and the worker pod is killed."""

    def body(lab: Lab) -> dict[str, Any]:
        worker = lab.worker(
            work="2-8",
            lock_duration="10",
            max_in_flight="16",
            journal_lease="6",
            cancel_check_interval="1",
            cancel_grace="2",
        )
        supervisor = chaos.Supervisor(worker)
        killer = chaos.WorkerKiller(supervisor.kill, seed=lab.seed, low=6.0, high=12.0)
        ids = lab.start_instances(ctx.count(30))
        rng = random.Random(lab.seed)
        deleter = Deleter(lab, rng.sample(ids, len(ids) // 3), seed=lab.seed, window=25.0)
        deleter.join(60)
        deleted = set(deleter.deleted)
        kept = [i for i in ids if i not in deleted]
        lab.wait_finished(kept, FINISH)
        killer.stop()
        lab.wait_finished(kept, FINISH)
        _settle(lab, 90)
        supervisor.stop()
        messaged = Counter(
            op["key"] for op in _ops(lab, "POST /message") if op["result"] in ("ok", "info")
        )
        reached = sorted(i for i in deleted if messaged.get(i))
        rows = [row for row in all_journal_rows(lab) if row[1] in deleted]
        wrong = [row for row in rows if row[2] not in _ENDED_BY_CANCEL]
        cancelled_lines = _count_lines(lab, "reply job cancelled, no message sent")
        lab.instances[:] = kept  # the deleted cannot finish: S28's own criterion covers them
        lab.notes.update(
            kills=killer.kills,
            restarts=supervisor.restarts,
            deleted=len(deleted),
            deleted_too_late=len(deleter.too_late),
            deleted_jobs=dict(Counter(row[2] for row in rows)),
            cancelled_log_lines=cancelled_lines,
        )
        detail = (
            f"{len(deleted)} deleted; reached by a message (or a try whose answer was lost): "
            f"{len(reached)} {reached[:3]}; their jobs not cancelled/dropped: {len(wrong)} "
            f"{[row[2] for row in wrong[:3]]}"
        )
        expect = Expectation(reruns=True, extra={"S28": (not reached and not wrong, detail)})
        return _finish(lab, expect)

    return _run(ctx, "S28", body)


def _count_lines(lab: Lab, text: str) -> int:
    return sum(path.read_text(errors="replace").count(text) for path in lab.worker_logs())


CANCEL_SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {"S28": s28}
