"""The invariants I1-I6 after a scenario, from the engine's REST history, the journals, the
ledger, the operation history and the worker logs. :func:`check` returns a JSON-able verdict.

- I1 liveness: every instance that should finish has finished;
- I2 catch exactly once: one completed passage of the catch event per finished instance (one
  per round in a looping model: ``Expectation.rounds``), no message subscription left, and no
  second successful correlation in the history;
- I3 effect exactly once: one ``applied`` ledger row per finished instance, and the result the
  instance received is that row's (its own: no cross-talk); where the scenario injects no
  crash, the work started exactly once per job;
- I4 no unexpected incidents;
- I5 the worker stays alive: no unplanned exit, exit code 0 on the final SIGTERM, polling
  again within a bound after each fault ended, CPU below 20 % of a core while the engine
  was down (when measured);
- I6 no leaks: the canary password, its Basic-auth form and the canary payload appear in no
  worker log line.

Plus J, journal settled: no journal row is left unfinished once every instance has ended.
"""

from __future__ import annotations

import base64
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camunda_relay.replies.job import FINISHED
from harness import history
from harness.lab import CANARY_PAYLOAD, CATCH_ACTIVITY, MESSAGE, USER, Lab
from harness.ledger import Ledger

__all__ = ["Expectation", "all_journal_rows", "check", "journal_rows", "pg_journal_rows"]

RESUME_BOUND = 60.0  # s: backoff cap 30 + request timeout 10 + long poll 5 + slack
CPU_LIMIT = 0.20


@dataclass
class Expectation:
    """What a scenario allows beyond the global invariants."""

    incidents: int = 0  # incidents expected (S13)
    reruns: bool = True  # work may start more than once per job (crash scenarios)
    must_finish: Sequence[str] | None = None  # default: every instance of the lab
    resume_bound: float = RESUME_BOUND
    journal_settled: bool = True
    rounds: int = 1  # passages of the catch event, replies and effects per instance (S20)
    extra: dict[str, tuple[bool, str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # invariant -> why not checked


FINISHED_STATES = frozenset(state.value for state in FINISHED)
"""The journal states of finished jobs, as the journal files store them."""


def _ok(passed: bool, detail: str) -> dict[str, Any]:
    return {"ok": bool(passed), "detail": detail}


def journal_rows(paths: Iterable[Path]) -> list[tuple[str, str, str, int]]:
    """(job id, process instance id, state, attempts) of every job in the journal files."""
    rows: list[tuple[str, str, str, int]] = []
    for path in paths:
        if not path.exists():
            continue
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows.extend(
                conn.execute(
                    "SELECT id, process_instance_id, state, attempts FROM relay_jobs"
                ).fetchall()
            )
        except sqlite3.OperationalError:
            pass
        finally:
            conn.close()
    return rows


def pg_journal_rows(urls: Iterable[str]) -> list[tuple[str, str, str, int]]:
    """As :func:`journal_rows`, for PostgreSQL journals (``postgresql://`` URLs)."""
    import psycopg

    rows: list[tuple[str, str, str, int]] = []
    for url in urls:
        try:
            with psycopg.connect(url, connect_timeout=10) as conn:
                rows.extend(
                    conn.execute(
                        "SELECT id, process_instance_id, state, attempts FROM relay_jobs"
                    ).fetchall()
                )
        except psycopg.errors.UndefinedTable:
            pass
    return rows


def all_journal_rows(lab: Lab) -> list[tuple[str, str, str, int]]:
    """Every job of the lab's journals, SQLite files and PostgreSQL databases."""
    return journal_rows(lab.journals()) + pg_journal_rows(lab.pg_journals)


def _leaks(logs: Iterable[Path], secrets_: Mapping[str, str]) -> dict[str, int]:
    counts = dict.fromkeys(secrets_, 0)
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            lowered = line.lower()
            for name, secret in secrets_.items():
                if secret.lower() in lowered:
                    counts[name] += 1
    return counts


def check(lab: Lab, expect: Expectation | None = None) -> dict[str, Any]:
    expect = expect or Expectation()
    ids = list(lab.instances)
    must = list(expect.must_finish if expect.must_finish is not None else ids)
    rest = lab.rest

    unfinished = set(lab.unfinished(ids))
    finished = [i for i in ids if i not in unfinished]
    passages = Counter(
        item["processInstanceId"]
        for item in rest.get(
            "/history/activity-instance",
            params={"activityId": CATCH_ACTIVITY, "maxResults": 1_000_000},
        ).json()
        if item.get("endTime") and not item.get("canceled")
    )
    subscriptions = [
        item
        for item in rest.get(
            "/event-subscription", params={"eventType": "message", "eventName": MESSAGE}
        ).json()
        if item.get("processInstanceId") in set(finished)
    ]
    incidents = [i for i in rest.get("/incident").json() if i.get("processInstanceId") in ids]
    with_incident = {i["processInstanceId"] for i in incidents}
    effects = _variables(lab, "effect_id", finished)
    targets = _variables(lab, "processed_for", finished)

    operations = list(history.read(lab.history_path))
    correlated = Counter(
        op["key"] for op in operations if op["op"] == "POST /message" and op["result"] == "ok"
    )
    ledger = Ledger(lab.ledger_path).summary()
    rows = all_journal_rows(lab)

    rounds = expect.rounds
    dup_passages = {i: n for i, n in passages.items() if n > rounds}
    dup_messages = {i: n for i, n in correlated.items() if n > rounds}
    not_passed = [i for i in finished if passages.get(i, 0) != rounds]
    lost = [i for i in ids if i in unfinished and i not in with_incident]
    checks: dict[str, dict[str, Any]] = {}

    missing = [i for i in must if i in unfinished]
    checks["I1"] = _ok(not missing, f"{len(missing)} of {len(must)} not finished {missing[:3]}")
    checks["I2"] = _ok(
        not not_passed and not subscriptions and not dup_messages,
        f"passages!={rounds}: {len(not_passed)} {not_passed[:3]}; subscriptions left: "
        f"{len(subscriptions)}; instances correlated more than {rounds}x: {len(dup_messages)}",
    )

    applied_wrong = [i for i in finished if len(ledger.applied_instance.get(i, [])) != rounds]
    mismatch = [
        i
        for i in finished
        if effects.get(i) not in ledger.applied_instance.get(i, [])
        or targets.get(i) not in (i, None)
    ]
    keys = set(ledger.attempts)
    reruns = {k: n for k, n in ledger.attempts.items() if n > 1}
    multi_worker = {k: sorted(w) for k, w in ledger.workers.items() if len(w) > 1}
    i3 = not applied_wrong and not mismatch
    detail = (
        f"applied!={rounds}: {len(applied_wrong)} {applied_wrong[:3]}; delivered effect not the "
        f"applied one / cross-talk: {len(mismatch)} {mismatch[:3]}; jobs: {len(keys)}; "
        f"re-run jobs: {len(reruns)}; re-applies refused: {sum(ledger.reapplied.values())}"
    )
    if not expect.reruns:
        i3 = i3 and not reruns and not multi_worker
        detail += f"; work started twice (not allowed here): {len(reruns)} {list(reruns)[:3]}"
    checks["I3"] = _ok(i3, detail)

    checks["I4"] = _ok(
        len(incidents) == expect.incidents,
        f"{len(incidents)} incidents, {expect.incidents} expected: "
        + "; ".join(sorted({str(i.get("incidentMessage"))[:120] for i in incidents})[:3]),
    )
    checks["I5"] = _liveness(lab, operations, expect)
    secret_forms = {
        "password": lab.password,
        "basic-auth": base64.b64encode(f"{USER}:{lab.password}".encode()).decode(),
        "payload": CANARY_PAYLOAD,
        "canary": "canary",
    }
    leaks = _leaks(lab.worker_logs(), secret_forms)
    checks["I6"] = _ok(not any(leaks.values()), f"log lines with secrets: {leaks}")
    unfinished_rows = [r for r in rows if r[2] not in FINISHED_STATES]
    if expect.journal_settled:
        checks["J"] = _ok(
            not unfinished_rows or bool(unfinished),
            f"{len(rows)} journal rows, unfinished: {len(unfinished_rows)} "
            f"{[r[2] for r in unfinished_rows[:3]]}; states: {dict(Counter(r[2] for r in rows))}",
        )
    for name, (passed, text) in expect.extra.items():
        checks[name] = _ok(passed, text)
    for name, why in expect.skipped.items():
        checks[name] = {"ok": True, "skipped": True, "detail": why}

    return {
        "scenario": lab.name,
        "seed": lab.seed,
        "instances": len(ids),
        "finished": len(finished),
        "lost": len(lost),
        "dup_deliveries": len(dup_passages) + len(dup_messages),
        "dup_effects": sum(ledger.reapplied.values()),
        "max_attempts": max(ledger.attempts.values(), default=0),
        "attempts_histogram": ledger.histogram(),
        "incidents": len(incidents),
        "checks": checks,
        "ok": all(c["ok"] for c in checks.values()),
        "notes": lab.notes,
    }


def _variables(lab: Lab, name: str, instance_ids: Sequence[str]) -> dict[str, Any]:
    if not instance_ids:
        return {}
    response = lab.rest.post(
        "/history/variable-instance",
        json={"variableName": name, "processInstanceIdIn": list(instance_ids)},
        params={"deserializeValues": "false"},
    )
    response.raise_for_status()
    return {item["processInstanceId"]: item["value"] for item in response.json()}


def _liveness(lab: Lab, operations: list[dict[str, Any]], expect: Expectation) -> dict[str, Any]:
    problems: list[str] = []
    for name, worker in lab.workers.items():
        codes = [c for c in worker.exit_codes if c not in (0, -9)]
        if codes:
            problems.append(f"{name} exit codes {worker.exit_codes}")
        unplanned = lab.notes.get("unplanned_exits", {}).get(name)
        if unplanned:
            problems.append(f"{name} exited on its own: {unplanned}")
    fetches = sorted(
        op["end_t"]
        for op in operations
        if op["op"] == "POST /external-task/fetchAndLock" and op["result"] == "ok"
    )
    resumed: list[float] = []
    for what, at in lab.marks:
        if what != "fault-end":
            continue
        after = [t for t in fetches if t >= at]
        took = (after[0] - at) if after else float("inf")
        resumed.append(round(took, 1))
        if took > expect.resume_bound:
            problems.append(f"polling resumed {took:.1f} s after a fault ended")
    cpu = lab.notes.get("cpu_while_down")
    if cpu is not None and cpu > CPU_LIMIT:
        problems.append(f"worker CPU {cpu:.0%} of a core while the engine was down")
    detail = f"resumed after (s): {resumed}" + (f"; cpu while down: {cpu:.1%}" if cpu else "")
    return _ok(not problems, "; ".join([*problems, detail]))
