"""The fault scenarios of deferred replies' answers, S23 and S25 of FAULTS.md: an answer
accepted while its handler still runs survives the attempt raising and the pod's kill -9,
and a journal write that fails, each in turn, leaves no state half-made.

They follow :mod:`harness.scenarios` (one engine per scenario, conditions waited on with
deadlines, the checker's invariants plus the scenario's own criterion) and are registered in
its ``SCENARIOS``. The worker is :mod:`harness.fault_worker` with ``FAULT_DEFER``: its work
applies the effect, then hands the reply token out as a file; the harness answers it as the
token's holder would (``camunda-relay reply``, ``POST /reply`` on the worker's server, or
:func:`~camunda_relay.send_reply` on the journal) with the effect's id, so the checker's I3
sees the answered result as the applied effect.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.tokens import send_reply
from harness.checker import Expectation
from harness.lab import REPO, Lab, free_port, wait_until
from harness.ledger import Ledger
from harness.scenarios import Context, _finish, _run

__all__ = ["ANSWER_SCENARIOS"]

SECRET = "harness-reply-secret-" + "x" * 8
DEADLINE = "45"  # s: a reply answered nowhere ends in an incident after this (a74488b's fate)
ANSWERED_WAIT = 180.0  # s: every token handed out and answered within this


class Holder:
    """The tokens' holder: answers each token the work hands out, once, by one channel, and
    remembers which answers were accepted."""

    def __init__(self, lab: Lab, folder: Path, journal: Path, port: int | None) -> None:
        self.lab = lab
        self.folder = folder
        self.journal = journal
        self.port = port
        self.accepted: dict[str, str] = {}  # instance -> channel
        self.refused: dict[str, str] = {}  # instance -> why
        self.repeats_refused = 0

    def answer_all(
        self,
        instances: list[str],
        channels: Callable[[int], str],
        alive: Callable[[], bool] = lambda: True,
    ) -> bool:
        """Answer every instance's token as it appears (until the worker is gone); True
        when all were answered."""
        pending = {instance: n for n, instance in enumerate(instances)}

        def step() -> bool:
            if not alive():
                return True
            for instance, n in list(pending.items()):
                token_file = self.folder / f"{instance}.token"
                if token_file.exists():
                    self._answer(instance, json.loads(token_file.read_text()), channels(n))
                    (self.folder / f"{instance}.answered").touch()
                    del pending[instance]
            return not pending

        return bool(wait_until(step, timeout=ANSWERED_WAIT, interval=0.5))

    def _answer(self, instance: str, handed: dict[str, str], channel: str) -> None:
        variables = {
            "effect_id": handed["effect_id"],
            "processed_for": instance,
            "answered_by": channel,
        }
        answer = {"cli": self._cli, "http": self._http, "python": self._python}[channel]
        why = answer(handed["token"], variables)
        if why is None and channel == "http":  # the same answer again: a lost response retried
            again = self._http(handed["token"], variables)
            self.repeats_refused += again is not None
        if why is None:
            self.accepted[instance] = channel
        else:
            self.refused[instance] = why

    def _cli(self, token: str, variables: dict[str, str]) -> str | None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "camunda_relay.cli", "reply", token]
        for name, value in variables.items():
            command += ["--var", f"{name}={json.dumps(value)}"]
        command += ["--journal", str(self.journal)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        return None if done.returncode == 0 else f"cli exit {done.returncode}"

    def _http(self, token: str, variables: dict[str, str]) -> str | None:
        response = httpx.post(
            f"http://127.0.0.1:{self.port}/reply",
            json={"token": token, "variables": variables},
            headers={"Authorization": f"Bearer {SECRET}"},
            timeout=60,
        )
        return None if response.status_code == 200 else f"http {response.status_code}"

    def _python(self, token: str, variables: dict[str, str]) -> str | None:
        async def answer() -> None:
            journal = SqliteJournal(self.journal, owner=f"holder-{secrets.token_hex(3)}")
            try:
                await send_reply(journal, token, variables)
            finally:
                await journal.close()

        try:
            asyncio.run(answer())
        except Exception as error:  # noqa: BLE001 - a refused answer is a finding
            return type(error).__name__
        return None


def _answered_variables(lab: Lab, instances: list[str]) -> dict[str, Any]:
    if not instances:
        return {}
    response = lab.rest.post(
        "/history/variable-instance",
        json={"variableName": "answered_by", "processInstanceIdIn": instances},
    )
    response.raise_for_status()
    return {item["processInstanceId"]: item["value"] for item in response.json()}


def _delivered_as_answered(lab: Lab, holder: Holder) -> tuple[bool, str]:
    got = _answered_variables(lab, list(holder.accepted))
    wrong = [i for i, channel in holder.accepted.items() if got.get(i) != channel]
    ok = not wrong and not holder.refused and not holder.repeats_refused
    return ok, (
        f"{len(holder.accepted)} answers accepted ({dict(_count(holder.accepted))}), "
        f"{len(holder.refused)} refused {list(holder.refused.values())[:3]}; same answer "
        f"twice refused: {holder.repeats_refused}; not delivered with the answered "
        f"variables: {len(wrong)} {wrong[:3]}"
    )


def _count(accepted: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for channel in accepted.values():
        counts[channel] = counts.get(channel, 0) + 1
    return counts


def _deferring_worker(lab: Lab, name: str, mode: str, tokens: Path, **settings: str) -> Any:
    tokens.mkdir(exist_ok=True)
    return lab.worker(
        name,
        work="0.2",
        FAULT_DEFER=mode,
        FAULT_TOKEN_DIR=str(tokens),
        reply_deadline=DEADLINE,
        **settings,
    )


# -- S23 ---------------------------------------------------------------------------------------


def s23(ctx: Context) -> dict[str, Any]:
    """Deferred answers accepted while the handler still runs (CLI and HTTP), then the
    attempt raises (phase 1) or the pod is killed -9 and restarted (phase 2): every accepted
    answer is delivered with its variables, no attempt after it, 0 incidents."""
    count = max(ctx.count(20), 2)

    def body(lab: Lab) -> dict[str, Any]:
        raising, killed = count // 2, count - count // 2
        channel: Callable[[int], str] = lambda n: ("cli", "http")[n % 2]  # noqa: E731
        port = free_port()
        journal = lab.folder / "journal-w1.sqlite3"
        # Phase 1: answered, then the attempt raises (the retry policy would run it again).
        tokens = lab.folder / "tokens-raise"
        worker = _deferring_worker(
            lab, "w1", "raise", tokens, http_port=str(port), reply_secret=SECRET
        )
        first = lab.start_instances(raising)
        holder = Holder(lab, tokens, journal, port)
        holder.answer_all(first, channel, alive=worker.alive)
        lab.wait_finished(first, float(DEADLINE) + 60)
        # Phase 2: answered, then the pod is killed while the work still runs; it restarts
        # (under a new worker id: it takes the dead one's jobs when their lease ran out).
        tokens2 = lab.folder / "tokens-kill"
        tokens2.mkdir()
        worker.stop()
        worker.start(FAULT_DEFER="hang", FAULT_TOKEN_DIR=str(tokens2))
        second = lab.start_instances(killed)
        holder2 = Holder(lab, tokens2, journal, port)
        holder2.answer_all(second, channel, alive=worker.alive)
        worker.kill9()
        lab.mark("fault-end")
        worker.start()
        lab.wait_finished(lab.instances, float(DEADLINE) + 120)  # then judge the answers
        return _finish(
            lab,
            Expectation(
                reruns=True,
                extra={
                    "S23-raise": _delivered_as_answered(lab, holder),
                    "S23-kill": _delivered_as_answered(lab, holder2),
                    "S23-no-attempt-after-the-answer": _single_attempts(lab, [*first, *second]),
                },
            ),
            timeout=float(DEADLINE) + 120,
        )

    return _run(ctx, "S23", body)


def _single_attempts(lab: Lab, instances: list[str]) -> tuple[bool, str]:
    ledger = Ledger(lab.ledger_path).summary()
    starts = {instance: ledger.instance_attempts.get(instance, 0) for instance in instances}
    twice = {i: n for i, n in starts.items() if n != 1}
    return not twice, f"work started other than once after its answer: {len(twice)} {twice}"


# -- S25 ---------------------------------------------------------------------------------------

S25_WRITES = (
    "record",
    "save_acknowledged",
    "park",
    "claim",
    "release_lease",  # fails at the stop that ends its round
    "save_done",
    "save_delivered",
    "renew",
)
"""The journal writes S25 fails in turn, one round each (a lost claim is left out: rows
claimed with the answer lost stay held by their live worker until it restarts, which the
claim rounds' own-jobs rule addresses)."""


def s25(ctx: Context) -> dict[str, Any]:
    """The journal fails on one write, each write in turn (a round of deferred replies per
    write, answered after parking, the write failing once before it and once after it
    committed): no state half-made, the next round heals it, every answer delivered."""
    per_round = max(ctx.count(24) // len(S25_WRITES), 2)

    def body(lab: Lab) -> dict[str, Any]:
        tokens = lab.folder / "tokens"
        holder = Holder(lab, tokens, lab.folder / "journal-w1.sqlite3", None)
        worker = None
        rounds: dict[str, float] = {}
        for write in S25_WRITES:
            spec = _spec(write)
            if worker is None:
                worker = _deferring_worker(lab, "w1", "defer", tokens, failpoints=spec)
            else:
                worker.stop()
                worker.start(CAMUNDA_RELAY_FAILPOINTS=spec)
            started = time.monotonic()
            batch = lab.start_instances(per_round)
            holder.answer_all(batch, lambda n: "python", alive=worker.alive)
            _round_end(lab, worker, batch)
            rounds[write] = round(time.monotonic() - started, 1)
        lab.notes["round_seconds"] = rounds
        lab.mark("fault-end")
        lab.wait_finished(lab.instances, 120)  # then judge the answers
        fired = _fired(lab)
        lab.notes["failpoints_fired"] = fired
        return _finish(
            lab,
            Expectation(
                reruns=False,
                extra={
                    "S25-answers": _delivered_as_answered(lab, holder),
                    "S25-injected": (
                        all(fired.get(write) for write in S25_WRITES),
                        f"writes failed per round: {fired}",
                    ),
                },
            ),
        )

    return _run(ctx, "S25", body)


def _round_end(lab: Lab, worker: Any, batch: list[str]) -> None:
    """Wait until the round's instances finished (or the worker is gone: a74488b refuses
    the journal's failpoints)."""
    wait_until(lambda: not worker.alive() or not lab.unfinished(batch), timeout=120)


def _spec(write: str) -> str:
    """The round's failpoints: the write fails once before it reached the journal and once
    after it committed (a lost claim is left out, see :data:`S25_WRITES`), then never."""
    if write in ("claim", "release_lease"):
        return f"journal_{write}=fail:1:x1"
    return f"journal_{write}=fail:1:x1,journal_{write}_lost=fail:1:x1"


def _fired(lab: Lab) -> dict[str, int]:
    """How many times each write's failpoint fired, from the worker's log (the journal's
    health says which write failed)."""
    text = "\n".join(path.read_text(errors="replace") for path in lab.worker_logs())
    return {write: text.count(f"failpoint journal_{write}") for write in S25_WRITES}


ANSWER_SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {"S23": s23, "S25": s25}
