"""The fault scenarios S17-S21 of FAULTS.md: pods sharing a PostgreSQL journal, an engine
outage longer than the reply deadline, a takeover beside 1,000 pending jobs, a looping
model, and a journal database gone silent.

They follow :mod:`harness.scenarios` (one engine per scenario, conditions waited on with
deadlines, the checker's invariants plus the scenario's own criterion) and are registered in
its ``SCENARIOS``. Their BPMN models live in ``harness/models/``. The PostgreSQL journals are
databases on the lab's own throwaway server (see :meth:`harness.lab.Lab.journal_database`);
S17, S19 and S21 are skipped when no PostgreSQL server is installed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from harness.checker import Expectation
from harness.faultproxy import ProxyThread, Rule
from harness.lab import CANARY_PAYLOAD, PROCESS_KEY, Lab, wait_until
from harness.ledger import Ledger
from harness.scenarios import Context, _finish, _ops, _postgres_available, _run
from harness.tcpproxy import TcpProxyThread

__all__ = ["SCALE_SCENARIOS"]

MODELS = Path(__file__).resolve().parent / "models"


def model(name: str, **params: object) -> str:
    """A BPMN file of ``harness/models`` with its ``@NAME@`` parameters filled in."""
    text = (MODELS / f"{name}.bpmn").read_text()
    for key, value in params.items():
        text = text.replace(f"@{key.upper()}@", str(value))
    return text


def start_many(
    lab: Lab,
    count: int,
    *,
    process_key: str = PROCESS_KEY,
    variables: Mapping[str, str] | None = None,
    threads: int = 4,
) -> list[str]:
    """Start ``count`` instances over a few connections at once (1,000 in seconds)."""
    base = len(lab.instances)
    values = {"payload": {"value": CANARY_PAYLOAD, "type": "String"}}
    values.update({k: {"value": v, "type": "String"} for k, v in (variables or {}).items()})

    def start(n: int) -> str:
        response = lab.rest.post(
            f"/process-definition/key/{process_key}/start",
            json={"businessKey": f"{lab.name}-{base + n}", "variables": values},
        )
        response.raise_for_status()
        return str(response.json()["id"])

    with ThreadPoolExecutor(threads) as pool:
        ids = list(pool.map(start, range(count)))
    lab.instances.extend(ids)
    return ids


def started(lab: Lab, ids: Iterable[str]) -> int:
    """How many of the instances have had their work started (the ledger's attempts)."""
    attempts = Ledger(lab.ledger_path).summary().instance_attempts
    return sum(1 for i in ids if attempts.get(i))


def pg_rows(url: str, query: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on a PostgreSQL journal ([] before the workers created the table)."""
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
        try:
            return conn.execute(query, tuple(params)).fetchall()  # type: ignore[arg-type]
        except psycopg.errors.UndefinedTable:
            return []


class JournalWatch:
    """Samples a PostgreSQL journal's jobs every ``interval`` s on a thread and keeps every
    job seen with an owner that does not serve its topic (``serves``: owner prefix ->
    topics). Finished jobs count too: an owner that saved a job at all has held it.
    ``samples`` counts the samples that saw jobs; a failing query is counted in ``errors``."""

    QUERY = "SELECT id, topic, owner, state FROM relay_jobs"

    def __init__(self, url: str, serves: Mapping[str, set[str]], interval: float = 0.25):
        self.url = url
        self.serves = serves
        self.interval = interval
        self.samples = 0
        self.errors: dict[str, int] = {}
        self.violations: dict[str, tuple[str, str, str]] = {}  # job -> (topic, owner, state)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="journal-watch")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                rows = pg_rows(self.url, self.QUERY)
            except psycopg.Error as error:
                name = type(error).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                continue
            self.samples += 1 if rows else 0
            for job, topic, owner, state in rows:
                for prefix, topics in self.serves.items():
                    if str(owner).startswith(prefix) and topic not in topics:
                        self.violations.setdefault(job, (topic, owner, state))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _skip(name: str) -> dict[str, Any]:
    return {"scenario": name, "ok": True, "skipped": "PostgreSQL not installed"}


# -- S17: two routers, one journal ----------------------------------------------------------------


def s17(ctx: Context) -> dict[str, Any]:
    """Pods A (topic a) and B (topic b), both replying, on one PostgreSQL journal; B is
    killed (kill -9) while its work runs and restarted two leases later. A must never
    claim, renew or hold a job of topic b; B's jobs wait for B and finish."""
    lease = int(ctx.params.get("S17.lease", "6"))
    count = ctx.count(10)

    def body(lab: Lab) -> dict[str, Any]:
        for topic in ("a", "b"):
            key = f"relay-topic-{topic}"
            lab.deploy(key, model("topic", key=key, topic=topic))
        journal = lab.journal_database()
        common = {"journal": journal, "journal_lease": str(lease), "lock_duration": "20"}
        lab.worker("A", work="0.5-2", FAULT_TOPIC="a", **common)
        b = lab.worker("B", work="300", FAULT_TOPIC="b", **common)
        watch = JournalWatch(journal, {"A-": {"a"}, "B-": {"b"}})
        try:
            start_many(lab, count, process_key="relay-topic-a")
            b_ids = start_many(lab, count, process_key="relay-topic-b")
            wait_until(lambda: started(lab, b_ids) == len(b_ids), timeout=120)
            b.kill9()  # while the work of every one of its jobs runs
            lab.mark("fault-start")
            start_many(lab, count, process_key="relay-topic-a")  # A keeps working meanwhile
            time.sleep(2 * lease)  # the fault itself: B stays dead for two leases
            b.start(FAULT_WORK_SECONDS="0.5-2")
            lab.mark("fault-end")
            lab.wait_finished(lab.instances, 90)
        finally:
            watch.stop()
        wrong = watch.violations
        stray = _log_count(lab, "A", "unregistered topic")
        lab.notes.update(
            lease_s=lease,
            journal_samples=watch.samples,
            journal_sample_errors=watch.errors,
            jobs_held_by_a_pod_not_serving_their_topic=len(wrong),
            a_log_unregistered_topic_lines=stray,
        )
        if wrong:
            lab.notes["result"] = "a pod held jobs of a topic it does not serve"
        detail = (
            f"{len(wrong)} jobs held by a pod that does not serve their topic "
            f"{list(wrong.values())[:3]}; journal samples with jobs: {watch.samples} (at "
            f"least 20 needed), failed: {watch.errors}"
        )
        watched = watch.samples >= 20
        expect = Expectation(reruns=True, extra={"S17": (not wrong and watched, detail)})
        return _finish(lab, expect, timeout=30)

    if not _postgres_available():
        return _skip("S17")
    return _run(ctx, "S17", body)


def _log_count(lab: Lab, worker: str, text: str) -> int:
    log = lab.folder / f"worker-{worker}.log"
    return log.read_text(errors="replace").count(text) if log.exists() else 0


# -- S18: an engine outage longer than the reply deadline -----------------------------------------


def s18(ctx: Context) -> dict[str, Any]:
    """The reply deadline is 15 s; the engine is killed (kill -9) while the work runs and
    stays down 40 s, so every reply falls due, and its deadline passes, while the engine
    cannot answer. The deadline must not run meanwhile: every instance finishes, no
    incident."""
    deadline = int(ctx.params.get("S18.deadline", "15"))
    down = float(ctx.params.get("S18.down", "40"))

    def body(lab: Lab) -> dict[str, Any]:
        lab.worker(work="6-10", reply_deadline=str(deadline), lock_duration="20")
        ids = lab.start_instances(ctx.count(10))
        wait_until(lambda: started(lab, ids) == len(ids), timeout=120)
        lab.engine_kill9()
        lab.mark("fault-start")
        killed = time.time()
        time.sleep(down)  # the outage itself
        lab.engine_start()
        lab.mark("fault-end")
        back = time.time()
        lab.wait_finished(ids, 120)
        ends = _work_ends(lab)
        overdue = [i for i in ids if killed < ends.get(i, 0) and ends[i] + deadline < back]
        lab.notes.update(
            deadline_s=deadline,
            down_s=down,
            engine_back_after_s=round(back - killed, 1),
            replies_overdue_while_down=len(overdue),
        )
        probe = (
            len(overdue) == len(ids),
            f"{len(overdue)} of {len(ids)} replies fell due during the outage and passed the "
            f"{deadline} s deadline before the engine was back ({back - killed:.0f} s)",
        )
        return _finish(lab, Expectation(reruns=True, extra={"S18": probe}), timeout=30)

    return _run(ctx, "S18", body)


def _work_ends(lab: Lab) -> dict[str, float]:
    """When each instance's work applied its effect (the reply was due from then on)."""
    conn = sqlite3.connect(f"file:{lab.ledger_path}?mode=ro", uri=True, timeout=30)
    try:
        return {i: t for i, t in conn.execute("SELECT process_instance_id, t FROM applied")}
    finally:
        conn.close()


# -- S19: takeover under load ---------------------------------------------------------------------


def s19(ctx: Context) -> dict[str, Any]:
    """Pod L holds 1,100 pending reply jobs (their work parked), then fetches nothing more
    (its own proxy answers 503 to its fetches); peer P takes 15 new jobs and is killed
    (kill -9) during their work. L must take P's jobs over within two leases and finish
    them; then the parked work is released and everything finishes."""
    held = int(ctx.params.get("S19.held", "1100"))
    lease = int(ctx.params.get("S19.lease", "12"))
    peers = ctx.count(15)

    def body(lab: Lab) -> dict[str, Any]:
        journal = lab.journal_database()
        park = lab.folder / "parked-work-released"
        own = ProxyThread(lab.options.port, seed=lab.seed, history=lab.history)
        try:
            return _takeover(lab, journal, own, park, held=held, lease=lease, peers=peers)
        finally:
            own.close()

    if not _postgres_available():
        return _skip("S19")
    return _run(ctx, "S19", body)


_HELD = "SELECT count(*) FROM relay_jobs WHERE owner LIKE %s AND state = 'acknowledged'"
_TAKEN = """SELECT count(*) FROM relay_jobs WHERE id = ANY(%s)
AND (owner LIKE %s OR state IN ('delivered', 'failed', 'dropped'))"""


def _takeover(
    lab: Lab, journal: str, own: ProxyThread, park: Path, *, held: int, lease: int, peers: int
) -> dict[str, Any]:
    common = {"journal": journal, "journal_lease": str(lease), "lock_duration": "60"}
    # 1. L takes the parked instances, then fetches nothing more.
    live = lab.worker("L", work="0.5", url=own.url, FAULT_PARK_FILE=str(park), **common)
    loading = time.monotonic()
    start_many(lab, held, variables={"park": "1"})

    def holding() -> int:
        return int(pg_rows(journal, _HELD, ["L-%"])[0][0])

    wait_until(lambda: holding() >= held, timeout=240, interval=2)
    lab.notes.update(held_by_L=holding(), load_s=round(time.monotonic() - loading, 1))
    own.set_rules(Rule("http_status", match="POST /external-task/fetchAndLock", status=503))
    wait_until(lambda: _refused(lab, "L-"), timeout=60)  # L's open long poll has ended
    # 2. P takes the new instances and dies during their work.
    peer = lab.worker("P", work="600", **common)
    cpu_before, cpu_from = live.cpu(), time.monotonic()
    peer_ids = start_many(lab, peers)
    wait_until(lambda: started(lab, peer_ids) == len(peer_ids), timeout=120)
    query = "SELECT id FROM relay_jobs WHERE process_instance_id = ANY(%s)"
    peer_jobs = [row[0] for row in pg_rows(journal, query, [peer_ids])]
    cpu = (live.cpu() - cpu_before) / (time.monotonic() - cpu_from)
    peer.kill9()
    lab.mark("fault-start")
    killed = time.monotonic()
    # 3. L takes P's jobs over and finishes them; then the parked work ends.
    taken = wait_until(
        lambda: pg_rows(journal, _TAKEN, [peer_jobs, "L-%"])[0][0] == len(peer_jobs),
        timeout=3 * lease + 30,
    )
    took = time.monotonic() - killed
    finished = lab.wait_finished(peer_ids, 60)
    lab.notes.update(
        cpu_of_L_while_holding=round(cpu, 3),
        peer_jobs=len(peer_jobs),
        takeover_s=round(took, 1) if taken else None,
        peer_finished_after_kill_s=round(time.monotonic() - killed, 1) if finished else None,
    )
    own.clear()
    park.touch()
    lab.mark("fault-end")
    ok = bool(taken) and took <= 2 * lease and finished
    when = f"after {took:.1f} s" if taken else f"NOT within {3 * lease + 30} s"
    detail = (
        f"L held {lab.notes['held_by_L']} jobs; P's {len(peer_jobs)} jobs taken over {when} "
        f"(bound: two leases, {2 * lease} s); P's instances finished: {finished}"
    )
    if not ok:
        lab.notes["result"] = "takeover too late" if taken else "no takeover"
    return _finish(lab, Expectation(reruns=True, extra={"S19": (ok, detail)}))


def _refused(lab: Lab, prefix: str) -> bool:
    return any(
        o["err_type"] == "ProxyInjected" and str(o["worker"]).startswith(prefix)
        for o in _ops(lab, "POST /external-task/fetchAndLock")
    )


# -- S20: a looping model ------------------------------------------------------------------------

LOOP_KEY = "correlation-message-loop"


class ContinuationGate:
    """Holds the loop model's async continuations (their job definition suspended, new jobs
    created suspended) and lets them run for a moment every ``period`` s: a reply that
    follows its task's completion at once comes before the execution waits, in every round."""

    def __init__(self, lab: Lab, process_key: str, period: float = 2.0) -> None:
        self.lab = lab
        self.process_key = process_key
        self.period = period
        self.openings = 0
        self._stop = threading.Event()
        self._set(suspended=True)
        self._thread = threading.Thread(target=self._loop, daemon=True, name="gate")
        self._thread.start()

    def _set(self, *, suspended: bool) -> None:
        self.lab.rest.put(
            "/job-definition/suspended",
            json={
                "processDefinitionKey": self.process_key,
                "suspended": suspended,
                "includeJobs": True,
            },
        ).raise_for_status()

    def _jobs(self) -> int:
        response = self.lab.rest.get(
            "/job/count", params={"processDefinitionKey": self.process_key}
        )
        return int(response.json()["count"])

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self._set(suspended=False)
            self.openings += 1
            wait_until(lambda: self._jobs() == 0, timeout=10, interval=0.2)
            self._set(suspended=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._set(suspended=False)


def s20(ctx: Context) -> dict[str, Any]:
    """The catch event in a loop of three rounds behind an async continuation that is held
    back (:class:`ContinuationGate`), so rounds 2 and 3's replies come too early while an
    earlier round's passage is in history. Each round's reply is delivered once."""
    rounds = int(ctx.params.get("S20.rounds", "3"))

    def body(lab: Lab) -> dict[str, Any]:
        lab.deploy("faults-loop", model("loop", rounds=rounds))
        lab.worker(work="0")
        gate = ContinuationGate(lab, LOOP_KEY)
        try:
            ids = lab.start_instances(ctx.count(10), process_key=LOOP_KEY)
            lab.wait_finished(ids, 120)
        finally:
            gate.stop()
        early = _early_in_later_rounds(lab)
        lab.notes.update(rounds=rounds, gate_openings=gate.openings, early_later_rounds=early)
        probe = (
            early > 0,
            f"{early} replies of round 2 or later came too early (a passage of an earlier "
            "round already in history): the case this scenario probes",
        )
        expect = Expectation(reruns=False, rounds=rounds, extra={"S20": probe})
        return _finish(lab, expect, timeout=30)

    return _run(ctx, "S20", body)


def _early_in_later_rounds(lab: Lab) -> int:
    """'No execution waits' answers to a correlation that came after the instance's first
    delivered reply."""
    delivered: set[str] = set()
    early = 0
    for op in sorted(_ops(lab, "POST /message"), key=lambda o: o["invoke_t"]):
        key = op["key"]
        if op["result"] == "ok":
            delivered.add(key)
        elif op["http_status"] == 400 and key in delivered:
            early += 1
    return early


# -- S21: the journal database blackholed ----------------------------------------------------------


def s21(ctx: Context) -> dict[str, Any]:
    """The PostgreSQL journal sits behind a TCP proxy that goes silent (accepts, forwards
    nothing, no FIN, no RST) for 40 s while jobs run and new instances arrive. Journal calls
    must time out (the worker gives up a silent connection within 25 s), the worker must stop
    fetching new work once it knows it cannot record jobs (no task fetched from 5 s after it
    first gave up until the silence ends), nothing is lost, and polling and delivery resume."""
    silence = float(ctx.params.get("S21.silence", "40"))
    bound = float(ctx.params.get("S21.bound", "25"))

    def body(lab: Lab) -> dict[str, Any]:
        tcp = TcpProxyThread(lab.postgres_port)
        try:
            return _silent_journal(lab, ctx, tcp, silence=silence, bound=bound)
        finally:
            tcp.close()

    if not _postgres_available():
        return _skip("S21")
    return _run(ctx, "S21", body)


NOTICE = 5.0  # s: from the first journal call given up to no more fetching


def _silent_journal(
    lab: Lab, ctx: Context, tcp: TcpProxyThread, *, silence: float, bound: float
) -> dict[str, Any]:
    journal = lab.journal_database(port=tcp.port)
    lab.worker(work="3-6", journal=journal, max_in_flight="4")
    first = lab.start_instances(ctx.count(12))
    wait_until(lambda: started(lab, first) == len(first), timeout=120)
    tcp.blackhole(True)  # while the work of every job runs
    lab.mark("fault-start")
    on = time.time()
    lab.start_instances(max(ctx.count(12) // 2, 1))  # new work, offered while it is silent
    time.sleep(silence)  # the fault itself
    tcp.blackhole(False)
    lab.mark("fault-end")
    off = time.time()
    gave_up = tcp.gave_up()
    noticed = gave_up[0] - on if gave_up else None
    quiet_from = gave_up[0] + NOTICE if gave_up else on + bound
    fetches = [o for o in _ops(lab, "POST /external-task/fetchAndLock") if o.get("tasks")]
    late = sum(o["tasks"] for o in fetches if quiet_from <= o["end_t"] < off)
    lab.notes.update(
        silence_s=silence,
        proxy=tcp.counts(),
        first_call_given_up_after_s=round(noticed, 1) if noticed is not None else None,
        tasks_fetched_in_silence=sum(o["tasks"] for o in fetches if on <= o["end_t"] < off),
        tasks_fetched_once_noticed=late,
    )
    problems = []
    if noticed is None or noticed > bound:
        problems.append(f"no journal call timed out within {bound:.0f} s")
    if late:
        problems.append(f"{late} tasks fetched after the worker knew the journal was silent")
    if problems:
        lab.notes["result"] = "; ".join(problems)
    detail = (
        f"first silent journal connection given up after {noticed and round(noticed, 1)} s "
        f"(bound {bound:.0f} s), {len(gave_up)} in all; tasks fetched from {NOTICE:.0f} s "
        f"after that until the silence ended: {late} (must be 0)"
    )
    expect = Expectation(reruns=True, extra={"S21": (not problems, detail)})
    return _finish(lab, expect, timeout=120)


SCALE_SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "S17": s17,
    "S18": s18,
    "S19": s19,
    "S20": s20,
    "S21": s21,
}
