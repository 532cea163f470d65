"""The fault scenarios of FAULTS.md about who runs a job: S22 (a container restart under the
same worker id), S24 (tenant pods on one PostgreSQL journal) and S26 (an unreadable journal
row), with the small variants S22S and S26S of the smoke subset.

They follow :mod:`harness.scenarios` (one engine per scenario, conditions waited on with
deadlines, the checker's invariants plus the scenario's own criterion) and are registered in
its ``SCENARIOS``. S24 is skipped when no PostgreSQL server is installed.
"""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.checker import Expectation
from harness.lab import CANARY_PAYLOAD, PROCESS_KEY, REPO, Lab, wait_until
from harness.ledger import Ledger
from harness.scenarios import Context, _finish, _postgres_available, _run
from harness.scenarios_scale import pg_rows, start_many, started

__all__ = ["LIFECYCLE_SCENARIOS"]

CLAIM_BATCH = 500  # camunda_relay.worker.recovery.CLAIM_BATCH: the most one claim round takes
SEED_BPMN = REPO / "engine/src/main/resources/processes/correlation-message.bpmn"


def _attempts(lab: Lab) -> dict[str, int]:
    return Ledger(lab.ledger_path).summary().instance_attempts


def _resumed(lab: Lab, ids: Iterable[str]) -> int:
    """How many of the instances had their work started a second time (after the restart)."""
    attempts = _attempts(lab)
    return sum(1 for i in ids if attempts.get(i, 0) >= 2)


def _log_lines(lab: Lab, worker: str, text: str) -> list[str]:
    log = lab.folder / f"worker-{worker}.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [line for line in lines if text in line]


def _cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """``camunda-relay ARGS`` as an operator runs it (the worker's interpreter and path)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "camunda_relay.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


# -- S22: a container restart under the same id ---------------------------------------------------


def s22(ctx: Context, *, small: bool = False) -> dict[str, Any]:
    """One pod (worker id fixed, as a Kubernetes pod name) holds many pending reply jobs whose
    work is blocked; kill -9; restarted under the same id. Every claim round must take the
    pod's own jobs that no runner holds, until every one runs: all resume within the claim
    rounds their number needs, then finish. S22S: 20 jobs, restarted with 8 reply slots
    (the work released), so the jobs come back over several rounds."""
    name = "S22S" if small else "S22"
    count = ctx.count(20 if small else 1200)
    lease = int(ctx.params.get(f"{name}.lease", "9"))
    slots = 8 if small else CLAIM_BATCH
    rounds = math.ceil(count / slots)
    interval = lease / 3
    bound = 60 + (rounds + 1) * interval  # the restart (a new process, the engine asked) too

    def body(lab: Lab) -> dict[str, Any]:
        park = lab.folder / "parked-work-released"
        pod = lab.worker(
            "pod",
            work="0.2",
            journal_lease=str(lease),
            lock_duration="60",
            FAULT_PARK_FILE=str(park),
            FAULT_FIXED_WORKER_ID="relay-worker-0",
        )
        ids = start_many(lab, count, variables={"park": "1"})
        wait_until(lambda: started(lab, ids) == count, timeout=600, interval=2)
        pod.kill9()  # every job acknowledged, its work running
        lab.mark("fault-start")
        if small:
            park.touch()  # the jobs finish as they come back, 8 at a time
            pod.start(CAMUNDA_MAX_PENDING_REPLIES=str(slots))
        else:
            pod.start()
        back = time.monotonic()
        resumed = wait_until(lambda: _resumed(lab, ids) == count, timeout=bound, interval=1)
        took = time.monotonic() - back
        count_resumed = _resumed(lab, ids)
        park.touch()
        lab.mark("fault-end")
        lab.notes.update(
            held=count,
            claim_rounds_needed=rounds,
            claim_interval_s=round(interval, 1),
            resumed_after_restart=count_resumed,
            all_resumed_s=round(took, 1) if resumed else None,
        )
        detail = (
            f"{count_resumed} of {count} jobs resumed after a restart under the same id "
            f"({'in ' + format(took, '.1f') + ' s' if resumed else 'not all within'} "
            f"{bound:.0f} s: {rounds} claim rounds of {slots} every {interval:.0f} s, plus the "
            "restart)"
        )
        if not resumed:
            lab.notes["result"] = "own jobs held and never resumed"
        return _finish(lab, Expectation(reruns=True, extra={name: (bool(resumed), detail)}))

    return _run(ctx, name, body)


# -- S24: tenant pods on one journal --------------------------------------------------------------


def _deploy_for(lab: Lab, tenant: str) -> None:
    response = lab.rest.post(
        "/deployment/create",
        data={"deployment-name": f"seed-{tenant}", "tenant-id": tenant},
        files={"seed.bpmn": ("seed.bpmn", SEED_BPMN.read_bytes(), "application/octet-stream")},
    )
    response.raise_for_status()


def _start_for(lab: Lab, tenant: str, count: int) -> list[str]:
    values = {"payload": {"value": CANARY_PAYLOAD, "type": "String"}}
    base = len(lab.instances)

    def start(n: int) -> str:
        response = lab.rest.post(
            f"/process-definition/key/{PROCESS_KEY}/tenant-id/{tenant}/start",
            json={"businessKey": f"{lab.name}-{tenant}-{base + n}", "variables": values},
        )
        response.raise_for_status()
        return str(response.json()["id"])

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(start, range(count)))
    lab.instances.extend(ids)
    return ids


def _workers_of(lab: Lab, ids: Iterable[str]) -> set[str]:
    """The ledger's worker names that started work for any of the instances."""
    wanted = set(ids)
    conn = sqlite3.connect(f"file:{lab.ledger_path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT process_instance_id, worker FROM attempts").fetchall()
    finally:
        conn.close()
    return {str(worker) for instance, worker in rows if instance in wanted}


def _holders(journal: str, ids: list[str]) -> list[str]:
    """Who holds the instances' jobs, in which state, under which filter key (a count each)."""
    query = """SELECT owner, state, filter_key, count(*) FROM relay_jobs
WHERE process_instance_id = ANY(%s) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
    return [" ".join(str(value) for value in row) for row in pg_rows(journal, query, [ids])]


def s24(ctx: Context) -> dict[str, Any]:
    """Pods A (tenant_ids [tenanta]) and B ([tenantb]) serve one topic on one PostgreSQL
    journal; A is killed (kill -9) while its work runs; B runs on for three leases and is
    restarted once (naming A's jobs at start); then an A pod comes back under a new id. B
    must never run a task of tenant a; A's instances finish once an A pod is back."""
    lease = int(ctx.params.get("S24.lease", "6"))
    count = ctx.count(10)

    def body(lab: Lab) -> dict[str, Any]:
        for tenant in ("tenanta", "tenantb"):
            _deploy_for(lab, tenant)
        journal = lab.journal_database()
        common = {"journal": journal, "journal_lease": str(lease), "lock_duration": "20"}
        pod_a = lab.worker("A", work="300", FAULT_TENANTS="tenanta", **common)
        pod_b = lab.worker("B", work="0.5-1", FAULT_TENANTS="tenantb", **common)
        a_ids = _start_for(lab, "tenanta", count)
        b_ids = _start_for(lab, "tenantb", count)
        wait_until(lambda: started(lab, a_ids) == count, timeout=120)
        pod_a.kill9()  # while the work of every one of its jobs runs
        lab.mark("fault-start")
        more_b = _start_for(lab, "tenantb", count)  # B keeps working meanwhile
        lab.wait_finished([*b_ids, *more_b], 120)
        time.sleep(3 * lease)  # the fault itself: A's jobs free for three leases, B claiming
        pod_b.kill9()
        pod_b.start()  # a start of B beside A's jobs: it names them
        wait_until(lambda: bool(_log_lines(lab, "B", "other fetch filters")), timeout=60)
        time.sleep(lease)
        ran_by_b = "B" in _workers_of(lab, a_ids)
        before = _holders(journal, a_ids)
        lab.worker("A2", work="0.5-1", FAULT_TENANTS="tenanta", **common)
        lab.mark("fault-end")
        back = lab.wait_finished(a_ids, 120)
        lab.notes.update(a_jobs_before_a2=before, a_jobs_after=_holders(journal, a_ids))
        named = len(_log_lines(lab, "B", "other fetch filters"))
        lab.notes.update(
            lease_s=lease,
            b_ran_tenant_a_work=ran_by_b,
            b_start_warnings=named,
            a_finished_after_a2=back,
            a_workers=sorted(_workers_of(lab, a_ids)),
        )
        if ran_by_b:
            lab.notes["result"] = "pod B ran tenant a's work (an isolation breach)"
        ok = not ran_by_b and named == 1 and "B" not in _workers_of(lab, a_ids)
        detail = (
            f"B ran tenant a's work: {ran_by_b}; A's instances worked by "
            f"{sorted(_workers_of(lab, a_ids))}; B's start warnings naming A's jobs: {named}"
        )
        return _finish(lab, Expectation(reruns=True, extra={"S24": (ok, detail)}))

    if not _postgres_available():
        return {"scenario": "S24", "ok": True, "skipped": "PostgreSQL not installed"}
    return _run(ctx, "S24", body)


# -- S26: an unreadable row -----------------------------------------------------------------------


def _corrupt_one(path: Path) -> tuple[str, str]:
    """Give the middle job (by age) a payload of a later version; its (job, instance) id."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        rows = conn.execute(
            "SELECT id, process_instance_id FROM relay_jobs ORDER BY created_at, id"
        ).fetchall()
        job, instance = rows[len(rows) // 2]
        conn.execute("UPDATE relay_jobs SET payload = '{\"v\": 99}' WHERE id = ?", (job,))
        conn.commit()
    finally:
        conn.close()
    return str(job), str(instance)


def s26(ctx: Context, *, small: bool = False) -> dict[str, Any]:
    """A pod holds pending reply jobs (work blocked) and is killed (kill -9); one job's
    stored payload is made unreadable (written by a later version); the pod restarts under a
    new id. The others must all finish; the bad one is given back, named by id in one log
    line and in ``camunda-relay pending``; ``pending cancel`` then lets the reconciler
    resume its instance. S26S: 30 jobs."""
    name = "S26S" if small else "S26"
    count = ctx.count(30 if small else 600)
    lease = 6

    def body(lab: Lab) -> dict[str, Any]:
        park = lab.folder / "parked-work-released"
        settings = {
            "journal_lease": str(lease),
            "lock_duration": "60",
            "reconcile": "resume",
            "reconcile_interval": "5",
            "reconcile_min_age": "1",
        }
        pod = lab.worker("pod", work="0.2", FAULT_PARK_FILE=str(park), **settings)
        ids = start_many(lab, count, variables={"park": "1"})
        wait_until(lambda: started(lab, ids) == count, timeout=600, interval=2)
        pod.kill9()
        lab.mark("fault-start")
        journal = lab.folder / "journal-pod.sqlite3"
        bad_job, bad_instance = _corrupt_one(journal)
        park.touch()
        pod.start()  # a new id: the old lease runs out, then every job is taken over
        others = [i for i in ids if i != bad_instance]
        rest_finished = lab.wait_finished(others, 300)
        wait_until(
            lambda: bool(_log_lines(lab, "pod", f"journal job {bad_job} cannot")), timeout=30
        )
        named = len(_log_lines(lab, "pod", f"journal job {bad_job} cannot be read"))
        listed = _cli(lab, "pending", "--journal", str(journal))
        shown = listed.returncode == 0 and bad_job in listed.stdout
        cancel = _cli(lab, "pending", "cancel", bad_job, "--yes", "--journal", str(journal))
        lab.mark("fault-end")
        lab.notes.update(
            jobs=count,
            others_finished=rest_finished,
            bad_job_log_lines=named,
            bad_job_in_pending=shown,
            pending_exit=listed.returncode,
            cancel_exit=cancel.returncode,
        )
        if not rest_finished:
            lab.notes["result"] = "the batch with the unreadable row stalled"
        ok = rest_finished and named == 1 and shown and cancel.returncode == 0
        detail = (
            f"{count - 1} other jobs finished: {rest_finished}; job {bad_job} named in "
            f"{named} log lines (one wanted), in `pending`: {shown}"
        )
        return _finish(lab, Expectation(reruns=True, extra={name: (ok, detail)}))

    return _run(ctx, name, body)


LIFECYCLE_SCENARIOS = {
    "S22": s22,
    "S22S": lambda ctx: s22(ctx, small=True),
    "S24": s24,
    "S26": s26,
    "S26S": lambda ctx: s26(ctx, small=True),
}
