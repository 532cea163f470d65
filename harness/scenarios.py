"""The fault scenarios S1-S15 of FAULTS.md, each against a real engine of its own (S17-S21:
:mod:`harness.scenarios_scale`).

Each scenario is a function ``(ctx) -> verdict`` (the checker's JSON-able dict): it builds a
:class:`~harness.lab.Lab` in its own folder, injects its faults, waits on conditions with
deadlines (a fault's own duration is the only plain sleep), stops the workers with SIGTERM
and runs :func:`harness.checker.check`. Instance counts default to sizes that keep the full
run near 30 minutes on a 2-core machine; ``ctx.instances`` overrides them all.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from camunda_relay import errors
from camunda_relay.failpoints import NAMES as FAILPOINTS
from camunda_relay.http.httpx_stack import answer as httpx_answer
from harness import chaos, history
from harness.checker import (
    FINISHED_STATES,
    Expectation,
    all_journal_rows,
    check,
    journal_rows,
)
from harness.faultproxy import Rule
from harness.lab import CANARY_PAYLOAD, MESSAGE, PROCESS_KEY, USER, Lab, wait_until
from harness.ledger import Ledger

__all__ = ["SCENARIOS", "SMOKE", "Context"]

FINISH = 240.0  # s: I1's bound after the faults stopped (lock + backoff cap + work + recovery)


@dataclass
class Context:
    root: Path
    seed: int = 1
    instances: int | None = None
    jar: Path | None = None
    params: dict[str, str] = field(default_factory=dict)

    def count(self, default: int) -> int:
        return self.instances if self.instances is not None else default

    def lab(self, name: str, **kwargs: Any) -> Lab:
        return Lab(name, self.root / name, seed=self.seed, jar=self.jar, **kwargs)


def _settle(lab: Lab, timeout: float = 90.0) -> bool:
    """Wait until no journal row is unfinished (the last saves after a delivery)."""

    def settled() -> bool:
        return all(r[2] in FINISHED_STATES for r in all_journal_rows(lab))

    return bool(wait_until(settled, timeout=timeout, interval=1.0))


def _finish(lab: Lab, expect: Expectation, *, timeout: float = FINISH) -> dict[str, Any]:
    started = time.monotonic()
    must = lab.instances if expect.must_finish is None else list(expect.must_finish)
    lab.wait_finished(must, timeout)
    lab.notes["finish_wait_s"] = round(time.monotonic() - started, 1)
    _settle(lab, 60)
    ends = [at for what, at in lab.marks if what == "fault-end"]
    if ends:  # give I5 its chance: polling must resume within the bound after the last fault
        wait_until(lambda: _polled_after(lab, ends[-1]), timeout=expect.resume_bound + 5)
    _check_alive(lab)
    lab.notes["exit_codes"] = lab.stop_workers()
    return check(lab, expect)


def _polled_after(lab: Lab, at: float) -> bool:
    return any(
        o["result"] == "ok" and o["end_t"] >= at
        for o in _ops(lab, "POST /external-task/fetchAndLock")
    )


def _check_alive(lab: Lab) -> None:
    dead = {name: w.wait(0) for name, w in lab.workers.items() if not w.alive()}
    dead = {name: code for name, code in dead.items() if code not in (0, -9)}
    if dead:
        lab.notes.setdefault("unplanned_exits", {}).update(dead)


def _ops(lab: Lab, op: str | None = None) -> list[dict[str, Any]]:
    return [o for o in history.read(lab.history_path) if op is None or o["op"] == op]


def _run(
    ctx: Context, name: str, body: Callable[[Lab], dict[str, Any]], **kw: Any
) -> dict[str, Any]:
    lab = ctx.lab(name, **kw)
    try:
        return body(lab)
    finally:
        lab.close()


# -- S1, S2: crashes ------------------------------------------------------------------------------


def s1(ctx: Context) -> dict[str, Any]:
    """Worker crash at random points, repeated: failpoint kills plus kill -9 every 3-8 s."""
    p = float(ctx.params.get("S1.p", "0.05"))

    def body(lab: Lab) -> dict[str, Any]:
        failpoints = ",".join(f"{name}=kill:{p}" for name in sorted(FAILPOINTS))
        worker = lab.worker(
            work="0.2-1.5",
            failpoints=failpoints,
            lock_duration="10",
            max_in_flight="16",
            journal_lease="6",
        )
        supervisor = chaos.Supervisor(worker)
        killer = chaos.WorkerKiller(supervisor.kill, seed=lab.seed)
        lab.start_instances(ctx.count(40))
        lab.wait_finished(lab.instances, FINISH * 2)
        killer.stop()
        # The supervisor (Kubernetes) keeps restarting the worker, which the failpoints still
        # kill now and then, until every instance is done: a job the journal holds as
        # finished (dropped: its task was not completed) still needs a worker to run again.
        lab.wait_finished(lab.instances, FINISH)
        _settle(lab, 90)
        supervisor.stop()
        lab.notes.update(kills=killer.kills, restarts=supervisor.restarts, failpoint_p=p)
        return _finish(lab, Expectation(reruns=True))

    return _run(ctx, "S1", body)


def s2a(ctx: Context) -> dict[str, Any]:
    """Crash after complete, before the work (every time); recovery finishes all."""

    def body(lab: Lab) -> dict[str, Any]:
        worker = lab.worker(
            work="0.5", failpoints="after_complete_before_work=kill", lock_duration="10"
        )
        supervisor = chaos.Supervisor(worker)
        lab.start_instances(ctx.count(30))
        lab.wait_finished(lab.instances, FINISH * 2)
        _settle(lab, 90)
        supervisor.stop()
        lab.notes.update(restarts=supervisor.restarts)
        return _finish(lab, Expectation(reruns=True))

    return _run(ctx, "S2A", body)


def _orphaned(lab: Lab, count: int) -> list[str]:
    """S2A's crash, with the journal lost at every restart: instances wait, no journal knows."""
    journal = lab.folder / "journal-w1.sqlite3"

    def lose_journal() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{journal}{suffix}").unlink(missing_ok=True)

    worker = lab.worker(
        work="0.5", failpoints="after_complete_before_work=kill", lock_duration="10"
    )
    supervisor = chaos.Supervisor(worker, before_restart=lose_journal)
    lab.start_instances(count)
    wait_until(lambda: lab.external_tasks() == 0, timeout=FINISH * 2, interval=1.0)
    supervisor.stop()
    lab.notes["restarts"] = supervisor.restarts
    orphans = [i for i in lab.instances if i in set(lab.unfinished(lab.instances))]
    lab.mark("orphaned")
    return orphans


def _sweeping_worker(lab: Lab, action: str) -> None:
    """A worker with an empty journal of its own that sweeps every few seconds."""
    lab.worker("w2", work="0.5", reconcile=action, reconcile_interval="5", reconcile_min_age="2")


def s2b(ctx: Context) -> dict[str, Any]:
    """As S2A, but the journal is lost at every restart; a worker with
    CAMUNDA_RECONCILE=incident gives every orphan an incident (or an ERROR line naming it)
    within one sweep window: none waits silently."""
    sweep = float(ctx.params.get("S2B.sweep", "60"))

    def body(lab: Lab) -> dict[str, Any]:
        orphans = _orphaned(lab, ctx.count(20))
        _sweeping_worker(lab, "incident")
        reported = wait_until(
            lambda: _reported(lab, orphans) >= len(orphans), timeout=sweep, interval=2.0
        )
        count = _reported(lab, orphans)
        lab.notes.update(orphans=len(orphans), reported=count, sweep_window_s=sweep)
        if not reported:
            lab.notes["result"] = "orphans not reported"
        lab.notes["exit_codes"] = lab.stop_workers()
        expect = Expectation(
            must_finish=[],
            incidents=count,
            journal_settled=False,
            extra={
                "S2B": (
                    count == len(orphans),
                    f"{count} of {len(orphans)} orphans (waiting, no journal entry) reported "
                    f"within {sweep:.0f} s (incident or ERROR log naming the instance)",
                )
            },
        )
        return check(lab, expect)

    return _run(ctx, "S2B", body)


def s2c(ctx: Context) -> dict[str, Any]:
    """As S2B, but the sweeping worker has CAMUNDA_RECONCILE=resume: it rebuilds the orphans'
    jobs from the engine and finishes every instance."""

    def body(lab: Lab) -> dict[str, Any]:
        orphans = _orphaned(lab, ctx.count(20))
        _sweeping_worker(lab, "resume")
        lab.notes["orphans"] = len(orphans)
        return _finish(lab, Expectation(reruns=True))

    return _run(ctx, "S2C", body)


def _reported(lab: Lab, orphans: list[str]) -> int:
    incidents = {i.get("processInstanceId") for i in lab.rest.get("/incident").json()}
    logged = "\n".join(
        line
        for path in lab.worker_logs()
        for line in path.read_text(errors="replace").splitlines()
        if " ERROR " in line
    )
    return sum(1 for i in orphans if i in incidents or i in logged)


# -- S3, S4: races --------------------------------------------------------------------------------

ASYNC_MODEL = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="faults-async" targetNamespace="faults">
  <bpmn:message id="reply" name="sample_response" />
  <bpmn:process id="correlation-message-async" isExecutable="true"
    camunda:historyTimeToLive="1">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="send_message" />
    <bpmn:serviceTask id="send_message" camunda:type="external" camunda:topic="messageSending"
      camunda:asyncAfter="true" />
    <bpmn:sequenceFlow id="f2" sourceRef="send_message" targetRef="wait_for_response" />
    <bpmn:intermediateCatchEvent id="wait_for_response">
      <bpmn:messageEventDefinition id="wait_def" messageRef="reply" />
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="wait_for_response" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>
"""


def s3(ctx: Context) -> dict[str, Any]:
    """The reply comes before the catch event exists (asyncAfter + a slow step): retried."""

    def body(lab: Lab) -> dict[str, Any]:
        lab.deploy("faults-async", ASYNC_MODEL)
        lab.worker(work="0")
        lab.start_instances(ctx.count(30), process_key="correlation-message-async")
        verdict_expect = Expectation(reruns=False)
        lab.wait_finished(lab.instances, FINISH)
        early = Counter(
            o["key"] for o in _ops(lab, "POST /message") if o["err_type"] == "RestException"
        )
        logs = "".join(p.read_text(errors="replace") for p in lab.worker_logs())
        too_early_lines = logs.count("reply too early")
        errors_logged = [
            line for line in logs.splitlines() if " ERROR " in line or "WARNING" in line
        ]
        cap = int(ctx.params.get("S3.cap", "60"))
        lab.notes.update(
            early_answers=sum(early.values()),
            max_early_per_instance=max(early.values(), default=0),
            too_early_log_lines=too_early_lines,
        )
        verdict_expect.extra["S3"] = (
            sum(early.values()) > 0
            and max(early.values(), default=0) <= cap
            and too_early_lines >= 1
            and not errors_logged,
            f"{sum(early.values())} too-early answers (max {max(early.values(), default=0)} "
            f"per instance, cap {cap}); 'too early' log lines: {too_early_lines}; warnings or "
            f"errors logged: {len(errors_logged)} {errors_logged[:2]}",
        )
        return _finish(lab, verdict_expect)

    return _run(ctx, "S3", body)


def s4(ctx: Context) -> dict[str, Any]:
    """Duplicate fetch after lock expiry: worker A stalls 15 s after fetch, lock 2 s; B
    (another worker id) fetches the same tasks meanwhile."""

    def body(lab: Lab) -> dict[str, Any]:
        lab.worker("A", work="0.5", failpoints="after_fetch=sleep:15", lock_duration="2")
        # Phase 1: A alone; nobody re-fetches, so A's late complete may still succeed.
        alone = lab.start_instances(3)
        lab.wait_finished(alone, 120)
        late = Counter(
            o["http_status"]
            for o in _ops(lab, "POST /external-task/{id}/complete")
            if str(o["worker"]).startswith("A-")
        )
        # Phase 2: B runs beside A and takes A's tasks once their locks expire. B is started
        # first and stopped (SIGSTOP) while A fetches: it must not win the first fetch.
        b = lab.worker("B", work="0.5", lock_duration="2")
        wait_until(lambda: "polling" in b.log.read_text(errors="replace"), timeout=120)
        chaos.suspend(b.pid)
        time.sleep(6)  # B's open long poll (5 s) ends at the engine: no task goes to it
        phase2 = lab.start_instances(ctx.count(20))
        a_id = lab.workers["A"].env["CAMUNDA_WORKER_ID"]
        wait_until(lambda: _held_by(lab, a_id) >= min(len(phase2), 32), timeout=60)
        held_by_a = _held_by(lab, a_id)
        chaos.resume(b.pid)
        lab.wait_finished(phase2, FINISH)
        # A wakes up 15 s after its fetch and tries to complete what B has taken meanwhile.
        wait_until(lambda: len(_completes_by(lab, "A-")) >= len(alone) + held_by_a, timeout=90)
        completes = _ops(lab, "POST /external-task/{id}/complete")
        by_worker: dict[str, Counter[Any]] = {}
        for o in completes:
            by_worker.setdefault(str(o["worker"]), Counter())[o["http_status"]] += 1
        summary = Ledger(lab.ledger_path).summary()
        both = {k: sorted(w) for k, w in summary.workers.items() if len(w) > 1}
        alone_ok = late.get(204, 0)
        lab.notes.update(
            complete_statuses_by_worker={k: dict(v) for k, v in by_worker.items()},
            phase1_late_completes_succeeded=alone_ok,
            phase1_statuses=dict(late),
        )
        return _finish(
            lab,
            Expectation(
                reruns=False,
                extra={
                    "S4": (
                        not both,
                        f"jobs whose work both A and B started: {len(both)}; A's late "
                        f"completes without a re-fetch that succeeded: {alone_ok} of "
                        f"{len(alone)} (the engine does not check lock expiry)",
                    )
                },
            ),
        )

    return _run(ctx, "S4", body)


def _completes_by(lab: Lab, prefix: str) -> list[dict[str, Any]]:
    return [
        o
        for o in _ops(lab, "POST /external-task/{id}/complete")
        if str(o["worker"]).startswith(prefix)
    ]


def _held_by(lab: Lab, worker_id: str) -> int:
    """Tasks last fetched by ``worker_id`` (their lock may have expired since)."""
    response = lab.rest.get("/external-task/count", params={"workerId": worker_id})
    return int(response.json()["count"])


# -- S5, S6: lost responses -----------------------------------------------------------------------


def s5(ctx: Context) -> dict[str, Any]:
    """30 % of correlate responses are lost after the engine committed them."""

    def body(lab: Lab) -> dict[str, Any]:
        lab.proxy.set_rules(Rule("drop_response", match="POST /message", probability=0.3))
        lab.worker(work="0.2-1")
        lab.start_instances(ctx.count(30))
        lab.wait_finished(lab.instances, FINISH)
        dropped = [o for o in _ops(lab, "POST /message") if o["fault"] == "drop_response"]
        lab.notes["dropped_responses"] = len(dropped)
        return _finish(
            lab,
            Expectation(
                reruns=False,
                extra={"S5": (len(dropped) > 0, f"{len(dropped)} correlate responses lost")},
            ),
        )

    return _run(ctx, "S5", body)


def s6(ctx: Context) -> dict[str, Any]:
    """30 % of complete responses are lost after the engine committed them."""

    def body(lab: Lab) -> dict[str, Any]:
        lab.proxy.set_rules(
            Rule("drop_response", match="POST /external-task/*/complete", probability=0.3)
        )
        lab.worker(work="0.2-1")
        lab.start_instances(ctx.count(30))
        lab.wait_finished(lab.instances, FINISH)
        ops = _ops(lab)
        dropped = [o for o in ops if o["fault"] == "drop_response"]
        failures = [o for o in ops if o["op"].endswith("/failure")]
        lab.notes.update(dropped_responses=len(dropped), failure_reports=len(failures))
        return _finish(
            lab,
            Expectation(
                reruns=False,
                extra={
                    "S6": (
                        len(dropped) > 0 and not failures,
                        f"{len(dropped)} complete responses lost; failure reports: "
                        f"{len(failures)} (must be 0)",
                    )
                },
            ),
        )

    return _run(ctx, "S6", body)


def s6b(ctx: Context) -> dict[str, Any]:
    """A lost complete response followed by a long outage of complete (503 for 120 s):
    the completion went through, so the job must not be dropped when the retries run out."""
    outage = float(ctx.params.get("S6B.outage", "120"))

    def body(lab: Lab) -> dict[str, Any]:
        lab.proxy.set_rules(
            Rule("drop_response", match="POST /external-task/*/complete", count=1),
            Rule("http_status", match="POST /external-task/*/complete", status=503),
        )
        lab.worker(work="0.5", max_in_flight="1")
        lab.start_instances(1)
        lab.mark("fault-start")
        wait_until(lambda: lab.waiting() > 0, timeout=60)  # the engine took the completion
        time.sleep(outage)  # the outage itself
        lab.proxy.clear()
        lab.mark("fault-end")
        ops = _ops(lab, "POST /external-task/{id}/complete")
        lab.notes.update(
            complete_calls=len(ops),
            complete_results=dict(Counter(str(o["http_status"] or o["fault"]) for o in ops)),
            journal=[r[2] for r in journal_rows(lab.journals())],
        )
        return _finish(lab, Expectation(reruns=False), timeout=60)

    return _run(ctx, "S6B", body)


# -- S7: shared business keys ---------------------------------------------------------------------


def s7(ctx: Context) -> dict[str, Any]:
    """Three instances per business key: business-key-only correlation is refused as
    ambiguous (a configuration error); the worker's correlation by instance id is exact."""

    def body(lab: Lab) -> dict[str, Any]:
        # (a) by business key only, with three instances waiting on one key.
        probe = [str(x) for x in _start_raw(lab, 3, "BK-shared-probe")]
        tasks = lab.rest.post(
            "/external-task/fetchAndLock",
            json={
                "workerId": "s7-probe",
                "maxTasks": 10,
                "topics": [{"topicName": "messageSending", "lockDuration": 60000}],
            },
        ).json()
        for task in tasks:
            lab.rest.post(f"/external-task/{task['id']}/complete", json={"workerId": "s7-probe"})
        answer = lab.rest.post(
            "/message", json={"messageName": MESSAGE, "businessKey": "BK-shared-probe"}
        )
        mapped = errors.from_response(httpx_answer(answer), "POST /message")
        ambiguous = isinstance(mapped, errors.AmbiguousCorrelation) and not mapped.retryable
        for instance in probe:
            lab.rest.post("/message", json={"messageName": MESSAGE, "processInstanceId": instance})
        # (b) the worker, with business keys shared by groups of three.
        lab.worker(work="0.2-1")
        groups = max(ctx.count(30) // 3, 1)
        lab.start_instances(groups * 3, business_key=lambda n: f"BK-{n // 3}")
        lab.notes.update(
            business_key_only_answer=answer.status_code,
            mapped_to=type(mapped).__name__,
            retryable=mapped.retryable,
        )
        return _finish(
            lab,
            Expectation(
                reruns=False,
                extra={
                    "S7a": (
                        answer.status_code == 400 and ambiguous,
                        f"business-key-only: HTTP {answer.status_code} -> "
                        f"{type(mapped).__name__} (retryable={mapped.retryable})",
                    )
                },
            ),
        )

    return _run(ctx, "S7", body)


def _start_raw(lab: Lab, count: int, business_key: str) -> list[str]:
    ids = []
    for _ in range(count):
        response = lab.rest.post(
            f"/process-definition/key/{PROCESS_KEY}/start", json={"businessKey": business_key}
        )
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids


# -- S8-S11: the engine down, hung, failing, half-open --------------------------------------------


def s8(ctx: Context, database: str | None = None) -> dict[str, Any]:
    """kill -9 of the engine JVM for a while during a run, then a restart: on the bundled
    engine's H2 file (S8) and on PostgreSQL (S8PG)."""
    down = float(ctx.params.get("S8.down", "30"))

    def body(lab: Lab) -> dict[str, Any]:
        worker = lab.worker(work="1-3", lock_duration="20")
        lab.start_instances(ctx.count(40))
        wait_until(lambda: lab.waiting() > 0, timeout=60)
        lab.engine_kill9()
        lab.mark("fault-start")
        cpu_before = worker.cpu()
        time.sleep(down)  # the outage itself
        cpu = (worker.cpu() - cpu_before) / down
        alive = worker.alive()
        lab.engine_start()
        lab.mark("fault-end")
        lab.notes.update(down_s=down, cpu_while_down=cpu, alive_through_outage=alive)
        return _finish(
            lab, Expectation(reruns=True, extra={"S8": (alive, f"worker alive: {alive}")})
        )

    database = database or ctx.params.get("S8.db", "h2")
    if database == "postgres" and not _postgres_available():
        return {"scenario": "S8PG", "ok": True, "skipped": "PostgreSQL not installed"}
    name = "S8PG" if database == "postgres" else "S8"
    return _run(ctx, name, body, postgres=database == "postgres")


def s8b(ctx: Context) -> dict[str, Any]:
    """The worker dies right after complete; its replacement starts, then the engine goes
    down (kill -9) before the replacement takes the job over (lease): the takeover must not
    drop a job whose completion it cannot check while the engine is down."""
    down = float(ctx.params.get("S8B.down", "40"))

    def body(lab: Lab) -> dict[str, Any]:
        first = lab.worker(
            "w1", work="0.5", failpoints="after_complete_before_work=kill", max_in_flight="1"
        )
        ids = lab.start_instances(ctx.count(1))
        wait_until(lambda: not first.alive(), timeout=120)
        first.wait(5)
        replacement = lab.worker("w2", work="0.5", journal=lab.folder / "journal-w1.sqlite3")
        wait_until(lambda: _fetched_by_worker(lab, "w2-"), timeout=120)
        lab.engine_kill9()
        lab.mark("fault-start")
        time.sleep(down)  # the outage; the lease (15 s) runs out meanwhile
        lab.engine_start()
        lab.mark("fault-end")
        lab.notes.update(
            down_s=down,
            journal_after_outage=[r[2] for r in journal_rows(lab.journals())],
            replacement_alive=replacement.alive(),
        )
        lab.workers.pop("w1")  # killed by its failpoint on purpose
        return _finish(lab, Expectation(reruns=True, must_finish=ids), timeout=120)

    # On PostgreSQL when installed: the bundled H2 file loses the last commits on kill -9
    # (see S8), which would blur what this scenario looks at.
    return _run(ctx, "S8B", body, postgres=_postgres_available())


def _fetched_by_worker(lab: Lab, prefix: str) -> bool:
    return any(
        o["result"] == "ok" and str(o["worker"]).startswith(prefix)
        for o in _ops(lab, "POST /external-task/fetchAndLock")
    )


def s9(ctx: Context) -> dict[str, Any]:
    """The engine hangs (SIGSTOP 25 s, longer than the HTTP timeout and the lock), then the
    proxy adds 5-15 s of latency for 40 s: no hang, late calls harmless."""
    hang = float(ctx.params.get("S9.hang", "25"))

    def body(lab: Lab) -> dict[str, Any]:
        lab.worker(work="1-2", lock_duration="10")
        lab.start_instances(ctx.count(30))
        wait_until(lambda: lab.waiting() > 0, timeout=60)
        lab.engine_suspend()
        lab.mark("fault-start")
        time.sleep(hang)  # the hang itself
        lab.engine_resume()
        lab.mark("fault-end")
        lab.proxy.set_rules(Rule("latency", ms=10_000, jitter=5_000, probability=0.5))
        time.sleep(40)  # the slow phase itself
        lab.proxy.clear()
        lab.mark("fault-end")
        longest = max(
            (o["end_t"] - o["invoke_t"] for o in _ops(lab) if "fetchAndLock" not in o["op"]),
            default=0.0,
        )
        lab.notes.update(hang_s=hang, longest_call_s=round(longest, 1))
        return _finish(lab, Expectation(reruns=True))

    return _run(ctx, "S9", body)


def s10(ctx: Context) -> dict[str, Any]:
    """5xx: the proxy answers 503 to everything for 30 s, 500 to 30 % of correlations, and
    PostgreSQL stops (immediate) for 30 s under an engine that runs on it."""
    pg = ctx.params.get("S10.postgres", "auto")

    def body(lab: Lab) -> dict[str, Any]:
        lab.worker(work="0.5-2", lock_duration="20")
        lab.start_instances(ctx.count(30))
        wait_until(lambda: lab.waiting() > 0, timeout=60)
        lab.proxy.set_rules(Rule("http_status", status=503))
        lab.mark("fault-start")
        time.sleep(30)  # the outage itself
        lab.proxy.set_rules(Rule("http_status", match="POST /message", status=500, probability=0.3))
        lab.mark("fault-end")
        if lab._pg is not None:
            more = lab.start_instances(ctx.count(30) // 2)
            wait_until(lambda: lab.waiting() > 0, timeout=60)
            lab.postgres_stop_immediate()
            lab.mark("fault-start")
            time.sleep(30)  # the outage itself
            lab.postgres_start()
            lab.mark("fault-end")
            lab.notes["postgres_phase_instances"] = len(more)
        else:
            lab.notes["postgres_phase"] = "skipped: PostgreSQL not installed"
        lab.wait_finished(lab.instances, FINISH)
        lab.proxy.clear()
        failures = [o for o in _ops(lab) if o["op"].endswith("/failure")]
        injected = Counter(o["http_status"] for o in _ops(lab) if o["err_type"] == "ProxyInjected")
        lab.notes.update(injected=dict(injected), failure_reports=len(failures))
        return _finish(
            lab,
            Expectation(
                reruns=True,
                extra={"S10": (not failures, f"failure reports: {len(failures)} (must be 0)")},
            ),
        )

    use_pg = pg == "on" or (pg == "auto" and _postgres_available())
    return _run(ctx, "S10", body, postgres=use_pg)


def _postgres_available() -> bool:
    from tests.support.tools import postgres_bin_dir

    return postgres_bin_dir() is not None


def s11(ctx: Context) -> dict[str, Any]:
    """Half-open connections during the long poll: every exchange, in flight or new, goes
    silent for 60 s (no FIN, no RST); the read timeout must end the stuck requests."""
    silent = float(ctx.params.get("S11.silent", "60"))

    def body(lab: Lab) -> dict[str, Any]:
        lab.worker(work="0.5", lock_duration="10")
        lab.start_instances(ctx.count(10))
        lab.wait_finished(lab.instances, FINISH)
        wait_until(lambda: _open_fetch(lab), timeout=30)
        lab.proxy.freeze()
        lab.mark("fault-start")
        more = lab.start_instances(ctx.count(10))
        time.sleep(silent)  # the fault itself
        lab.proxy.thaw()
        lab.mark("fault-end")
        lab.notes.update(
            silent_s=silent,
            method="fault proxy stalls every exchange (nftables not used: see run.py --help)",
            started_during_fault=len(more),
        )
        # asyncResponseTimeout 5 s + request timeout 10 s + backoff, with slack.
        return _finish(lab, Expectation(reruns=True, resume_bound=45.0))

    return _run(ctx, "S11", body)


def _open_fetch(lab: Lab) -> bool:
    return bool(_ops(lab, "POST /external-task/fetchAndLock"))


# -- S12: SIGTERM ---------------------------------------------------------------------------------


def s12(ctx: Context) -> dict[str, Any]:
    """SIGTERM (a) idle in a long poll, (b) mid-work shorter than the grace, (c) mid-work
    longer than the grace, (d) during correlation retries; 30 s, then kill -9."""

    def body(lab: Lab) -> dict[str, Any]:
        results: dict[str, Any] = {}
        problems: list[str] = []
        ledger = lab.ledger_path

        def term(case: str, worker: Any) -> None:
            started = time.monotonic()
            worker.term()
            code = worker.wait(30)
            took = round(time.monotonic() - started, 1)
            if code is None:
                worker.kill9()
            results[case] = {"exit": code, "seconds": took}

        def attempts() -> int:
            return sum(Ledger(ledger).summary().attempts.values())

        # (a) idle in a long poll
        worker = lab.worker("w", work="3")
        wait_until(lambda: _fetch_open_now(lab), timeout=60)
        time.sleep(1)  # well inside the 5 s long poll
        term("a_idle", worker)
        # (b) mid-work, work (3 s) < grace (10 s)
        worker.start()
        lab.start_instances(1)
        wait_until(lambda: attempts() >= 1, timeout=60)
        term("b_short_work", worker)
        b_done = not lab.unfinished(lab.instances)
        # (c) mid-work, work (40 s) > grace (10 s): the journal keeps the job
        worker.start(FAULT_WORK_SECONDS="40")
        lab.start_instances(1)
        wait_until(lambda: attempts() >= 2, timeout=60)
        term("c_long_work", worker)
        left = [r for r in journal_rows(lab.journals()) if r[2] == "acknowledged"]
        # (d) during correlation retries (the engine answers 503 to every message)
        lab.proxy.set_rules(Rule("http_status", match="POST /message", status=503))
        worker.start(FAULT_WORK_SECONDS="0.5")  # also resumes (c)'s job
        lab.start_instances(1)
        wait_until(
            lambda: any(o["http_status"] == 503 for o in _ops(lab, "POST /message")), timeout=60
        )
        term("d_correlate_retry", worker)
        lab.proxy.clear()
        worker.start()
        for case in ("a_idle", "b_short_work", "d_correlate_retry"):
            if results[case]["exit"] != 0:
                problems.append(f"{case}: exit {results[case]['exit']}")
        if results["c_long_work"]["exit"] is None:
            problems.append("c_long_work: still running after 30 s")
        if not b_done:
            problems.append("b: the instance did not finish within the grace")
        if not left:
            problems.append("c: no journal entry left for the unfinished work")
        failures = [o for o in _ops(lab) if o["op"].endswith("/failure")]
        if failures:
            problems.append(f"{len(failures)} failures reported because of a shutdown")
        lab.notes["sigterm"] = results
        return _finish(
            lab,
            Expectation(
                reruns=True,
                extra={"S12": (not problems, "; ".join(problems) or json.dumps(results))},
            ),
        )

    return _run(ctx, "S12", body)


def _fetch_open_now(lab: Lab) -> bool:
    return any(o["result"] == "ok" for o in _ops(lab, "POST /external-task/fetchAndLock"))


# -- S13: bad input -------------------------------------------------------------------------------

_MUST_FAIL = ("deep_json", "big_int", "object", "raise")
_MAY_FAIL = ("huge",)
_MUST_PASS = ("long_string", "bytes", "normal")


def s13(ctx: Context) -> dict[str, Any]:
    """Bad input, table-driven: the worker's own bad results, an unknown reply message, and
    values the client or the engine must refuse without retrying."""

    def body(lab: Lab) -> dict[str, Any]:
        table: dict[str, str] = {}
        # Unknown message name: one instance, a worker replying with a message nobody waits for.
        wrong = lab.worker("wrong", work="0", FAULT_REPLY_MESSAGE="no_such_message")
        wrong_ids = lab.start_instances(1)
        wait_until(lambda: _incidents(lab, wrong_ids), timeout=120)
        table["unknown message"] = f"incidents: {len(_incidents(lab, wrong_ids))}"
        wrong.stop()
        # The worker's bad results.
        worker = lab.worker("w", work="0", retries="2")
        ids = {
            mode: lab.start_instances(1, variables={"mode": mode})[0]
            for mode in (*_MUST_FAIL, *_MAY_FAIL, *_MUST_PASS)
        }
        must_fail = [ids[m] for m in _MUST_FAIL]
        wait_until(lambda: len(_incidents(lab, must_fail)) == len(must_fail), timeout=180)
        wait_until(lambda: not lab.unfinished([ids[m] for m in _MUST_PASS]), timeout=180)
        wait_until(
            lambda: not lab.unfinished([ids["huge"]]) or _incidents(lab, [ids["huge"]]),
            timeout=180,
        )
        rss_mb = _peak_rss_mb(worker.pid) if worker.alive() else None
        summary = Ledger(lab.ledger_path).summary()
        for mode, instance in ids.items():
            state = "finished" if not lab.unfinished([instance]) else "waiting"
            if _incidents(lab, [instance]):
                state = "incident"
            attempts = summary.instance_attempts.get(instance, 0)
            table[f"result {mode}"] = f"{state}, attempts {attempts}"
        # Input the client refuses before sending, or the engine refuses (4xx, not retried).
        table.update(_client_inputs(lab))
        healthy = lab.start_instances(1)
        ok_after = lab.wait_finished(healthy, 120)
        table["normal instance afterwards"] = "finished" if ok_after else "NOT finished"
        huge_incident = 1 if _incidents(lab, [ids["huge"]]) else 0
        over_attempts = [k for k, n in summary.attempts.items() if n > 3]
        refused_ok = all(not v.startswith("UNEXPECTED") for v in table.values())
        lab.notes.update(table=table, worker_peak_rss_mb=rss_mb)
        must_finish = [i for i in lab.instances if i not in (*must_fail, ids["huge"], *wrong_ids)]
        return _finish(
            lab,
            Expectation(
                reruns=True,
                incidents=len(must_fail) + huge_incident + len(wrong_ids),
                must_finish=must_finish,
                journal_settled=True,
                extra={
                    "S13": (
                        refused_ok
                        and ok_after
                        and not over_attempts
                        and (rss_mb is None or rss_mb < 1024),
                        f"attempts over 3 (retries 2): {len(over_attempts)}; peak RSS "
                        f"{rss_mb} MiB; " + "; ".join(f"{k}: {v}" for k, v in table.items()),
                    )
                },
            ),
        )

    return _run(ctx, "S13", body)


def _incidents(lab: Lab, ids: list[str]) -> list[dict[str, Any]]:
    return [i for i in lab.rest.get("/incident").json() if i.get("processInstanceId") in ids]


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _client_inputs(lab: Lab) -> dict[str, str]:
    """Each bad value: refused by the client before sending, or a 4xx the client maps to a
    non-retryable error."""
    from camunda_relay.variables import encode, validate_business_key

    out: dict[str, str] = {}
    client_cases: dict[str, Callable[[], object]] = {
        "business key > 255": lambda: validate_business_key("k" * 256),
        "business key empty": lambda: validate_business_key(""),
        "business key control char": lambda: validate_business_key("a\x07b"),
        "variable nested 10 000 deep": lambda: encode("v", _deep(10_000)),
        "variable not text/number (object)": lambda: encode("v", object()),
        "variable int beyond 64 bits": lambda: encode("v", 2**70),
    }
    for name, call in client_cases.items():
        try:
            call()
        except errors.InvalidInput as error:
            out[name] = f"refused before sending ({type(error).__name__})"
        else:
            out[name] = "UNEXPECTED: accepted"
    engine_cases = {
        "Integer 'abc'": {"n": {"type": "Integer", "value": "abc"}},
        "Object, Java serialization": {
            "o": {
                "type": "Object",
                "value": base64.b64encode(
                    b"\xac\xed\x00\x05sr\x00\x13java.util.ArrayList"
                ).decode(),
                "valueInfo": {
                    "objectTypeName": "java.util.ArrayList",
                    "serializationDataFormat": "application/x-java-serialized-object",
                },
            }
        },
    }
    for name, variables in engine_cases.items():
        answer = lab.rest.post(
            f"/process-definition/key/{PROCESS_KEY}/start", json={"variables": variables}
        )
        if answer.is_success:
            out[name] = f"UNEXPECTED: engine accepted ({answer.status_code})"
            with contextlib.suppress(httpx.HTTPError):
                lab.rest.delete(f"/process-instance/{answer.json()['id']}")
            continue
        mapped = errors.from_response(httpx_answer(answer), "POST start")
        kind = "non-retryable" if not mapped.retryable else "retryable"
        if mapped.retryable and name.startswith("Object"):
            # The engine's own answer is a 500; the worker never sends Object values (the
            # encoder refuses them before sending: the "object" row above).
            kind += " (engine answers 500; never sent by the worker)"
        elif mapped.retryable:
            kind = "UNEXPECTED: " + kind
        out[name] = f"engine {answer.status_code} -> {type(mapped).__name__}, {kind}"
    return out


def _deep(depth: int) -> list[object]:
    nested: list[object] = []
    for _ in range(depth):
        nested = [nested]
    return nested


# -- S14: two owners, one job ---------------------------------------------------------------------


def s14(ctx: Context) -> dict[str, Any]:
    """Two workers on one journal both 'own' a job: A stops itself (SIGSTOP) after the work,
    before correlating; B takes the job over when A's lease runs out and correlates; A is
    continued at that moment and correlates too. Exactly one passage, no incident."""
    rounds = ctx.count(5)

    def body(lab: Lab) -> dict[str, Any]:
        journal = lab.folder / "journal-shared.sqlite3"
        a = lab.worker(
            "A",
            work="0.3",
            journal=journal,
            failpoints="after_work_before_correlate=stop",
            journal_lease="3",
            max_in_flight="1",
        )
        b = lab.worker("B", work="0.3", journal=journal, journal_lease="3", start=False)
        raced = 0
        for _ in range(rounds):
            # Only A runs: it takes the new instance, works, and stops itself.
            (instance,) = lab.start_instances(1)
            if not wait_until(lambda: _stopped(a.pid), timeout=90):
                break
            owner_a = _owner(journal, instance)
            b.start()  # B claims A's job once A's lease (3 s) ran out

            def taken(instance: str = instance, owner_a: str | None = owner_a) -> bool:
                return _owner(journal, instance) not in (None, owner_a)

            if not wait_until(taken, timeout=60):
                break
            chaos.resume(a.pid)  # A correlates now too: the race
            raced += 1
            lab.wait_finished([instance], 120)
            b.stop()
        lab.notes.update(rounds=rounds, raced=raced)
        if _stopped(a.pid):
            chaos.resume(a.pid)  # its failpoint stopped it again on a later job, if any
        return _finish(
            lab,
            Expectation(
                reruns=False,
                extra={"S14": (raced == rounds, f"{raced} of {rounds} races run")},
            ),
        )

    return _run(ctx, "S14", body)


def _stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _owner(journal: Path, instance: str) -> str | None:
    import sqlite3

    if not journal.exists():
        return None
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute(
            "SELECT owner FROM relay_jobs WHERE process_instance_id = ?", (instance,)
        ).fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return str(row[0]) if row else None


# -- S15: secrets ---------------------------------------------------------------------------------


def s15(ctx: Context) -> dict[str, Any]:
    """The password is rotated mid-run (the engine answers 401 for 30 s), then restored: a
    clear error, no tight loop, and no credential or payload in any log line."""
    window = float(ctx.params.get("S15.window", "30"))

    def body(lab: Lab) -> dict[str, Any]:
        observer = ("relayobserver", "observer-" + lab.password[-6:])
        lab.rest.post(
            "/user/create",
            json={"profile": {"id": observer[0]}, "credentials": {"password": observer[1]}},
        ).raise_for_status()
        lab.rest.put(f"/group/camunda-admin/members/{observer[0]}").raise_for_status()
        lab.rest.auth = httpx.BasicAuth(*observer)
        lab.worker(work="1-3", lock_duration="10")
        lab.start_instances(ctx.count(20))
        wait_until(lambda: lab.waiting() > 0, timeout=60)
        rotated = "canary-rotated-" + lab.password[-6:]
        _set_password(lab, rotated, observer[1])
        lab.mark("fault-start")
        started = time.time()
        time.sleep(window)  # the fault itself
        _set_password(lab, lab.password, observer[1])
        lab.mark("fault-end")
        ended = time.time()
        refused = [
            o for o in _ops(lab) if o["http_status"] == 401 and started <= o["invoke_t"] <= ended
        ]
        rate = len(refused) / window
        # Per source (the poll loop, or one job's correlation): backoff, not a tight loop.
        per_source = Counter((o["op"], o["key"] or o["worker"]) for o in refused)
        busiest = max(per_source.values(), default=0)
        logs = "".join(p.read_text(errors="replace") for p in lab.worker_logs())
        clear = "authentication failed" in logs.lower()
        rotated_leaks = logs.lower().count(rotated.lower())
        lab.notes.update(
            refused_401=len(refused),
            per_second=round(rate, 2),
            busiest_source_401=busiest,
            clear_error_logged=clear,
        )
        return _finish(
            lab,
            Expectation(
                reruns=True,
                extra={
                    "S15": (
                        busiest <= 15 and clear and rotated_leaks == 0,
                        f"{len(refused)} requests refused with 401 in {window:.0f} s "
                        f"({rate:.2f}/s, at most {busiest} from one poller or job: backoff "
                        f"allows 15); clear error logged: {clear}; rotated password in logs: "
                        f"{rotated_leaks}",
                    )
                },
            ),
        )

    return _run(ctx, "S15", body)


def _set_password(lab: Lab, password: str, observer_password: str) -> None:
    response = lab.rest.put(
        f"/user/{USER}/credentials",
        json={"password": password, "authenticatedUserPassword": observer_password},
    )
    response.raise_for_status()


SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "S1": s1,
    "S2A": s2a,
    "S2B": s2b,
    "S2C": s2c,
    "S3": s3,
    "S4": s4,
    "S5": s5,
    "S6": s6,
    "S6B": s6b,
    "S7": s7,
    "S8": s8,
    "S8PG": lambda ctx: s8(ctx, database="postgres"),
    "S8B": s8b,
    "S9": s9,
    "S10": s10,
    "S11": s11,
    "S12": s12,
    "S13": s13,
    "S14": s14,
    "S15": s15,
}
SMOKE = ("S2A", "S5", "S6", "S7", "S12", "S17", "S18", "S20", "S22S", "S23", "S26S")
_ = CANARY_PAYLOAD

# S17-S21 live in a module of their own, which uses the helpers above.
from harness.scenarios_scale import SCALE_SCENARIOS  # noqa: E402

SCENARIOS.update(SCALE_SCENARIOS)

# S28 too (instances cancelled while their work runs).
from harness.scenarios_cancel import CANCEL_SCENARIOS  # noqa: E402

SCENARIOS.update(CANCEL_SCENARIOS)

# S27 (engine nodes) likewise.
from harness.scenarios_nodes import NODES_SCENARIOS  # noqa: E402

SCENARIOS.update(NODES_SCENARIOS)

# S22, S24 and S26 (who runs a job) likewise.
from harness.scenarios_lifecycle import LIFECYCLE_SCENARIOS  # noqa: E402

SCENARIOS.update(LIFECYCLE_SCENARIOS)

# S23 and S25, deferred replies' answers, too.
from harness.scenarios_answers import ANSWER_SCENARIOS  # noqa: E402

SCENARIOS.update(ANSWER_SCENARIOS)
