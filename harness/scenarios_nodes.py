"""The fault scenario S27 of FAULTS.md: an engine node leaves the name while its long poll is
in flight (a scale-down behind a Kubernetes headless Service), and that poll then locks tasks.

Two bundled engines on the lab's PostgreSQL database (:mod:`harness.cluster`), the two
addresses of one name. The worker runs with ``CAMUNDA_URL_RESOLVE=all`` on that name, which a
hosts-style file resolves in the worker process only (``FAULT_HOSTS_FILE``,
:mod:`harness.hosts`); the scenario rewrites the file to drop a node and to bring it back.

Registered in :data:`harness.scenarios.SCENARIOS`; skipped when no PostgreSQL server is
installed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from harness import history
from harness.checker import Expectation
from harness.cluster import ADDRESSES, NAME, Cluster, peak_locked, start_cluster
from harness.lab import Lab, wait_until
from harness.scenarios import Context, _finish, _postgres_available, _run

__all__ = ["NODES_SCENARIOS"]

MAX_IN_FLIGHT = 6
LOCK = 600.0  # s: a task left to its lock would wait this long; the scenario ends far sooner
LONG_POLL = 60.0  # s: a poll is in flight nearly all the time while the worker idles
BOUND = 180.0  # s: the dropped node's batch finishes within this (long poll + work + slack)


def _log_lines(lab: Lab, text: str) -> int:
    log = lab.folder / "worker-w1.log"
    return log.read_text(errors="replace").count(text) if log.exists() else 0


def _resolved(lab: Lab, nodes: int, before: int) -> Callable[[], bool]:
    text = f"resolves to {nodes} engine nodes"
    return lambda: _log_lines(lab, text) > before


def _in_flight_catch(lab: Lab, noticed: float) -> int:
    """Tasks brought by node A's polls in flight when the worker had seen A leave (the batch
    started then; no other task was open): what the leaving poll locked."""
    ops = history.read(lab.folder / "history-node-a.jsonl")
    return sum(
        int(o["tasks"] or 0)
        for o in ops
        if o["op"].endswith("/fetchAndLock")
        and o["invoke_t"] < noticed
        and (o["end_t"] or 0) >= noticed
    )


def s27(ctx: Context) -> dict[str, Any]:
    """A node leaves the name mid-poll: work on both nodes, node A dropped from the name
    while its long poll waits, a batch started on A (its poll, and only its, is woken and
    locks tasks), A back in the name, more work on both. What the leaving poll locked runs
    at once; no task waits for its lock; never more than ``max_in_flight`` tasks locked."""

    def body(lab: Lab) -> dict[str, Any]:
        cluster = start_cluster(lab)
        try:
            return _scenario(ctx, lab, cluster)
        finally:
            cluster.close()

    if not _postgres_available():
        return {"scenario": "S27", "ok": True, "skipped": "PostgreSQL not installed"}
    return _run(ctx, "S27", body, postgres=True)


def _scenario(ctx: Context, lab: Lab, cluster: Cluster) -> dict[str, Any]:
    # Work waiting at both nodes before the worker starts: both polls fill the slots at once.
    count = ctx.count(24)
    warm = cluster.start(0, count // 2) + cluster.start(1, count - count // 2)
    lab.worker(
        url=f"http://{NAME}:{cluster.port}/engine-rest",
        url_resolve="all",
        max_in_flight=str(MAX_IN_FLIGHT),
        long_poll=str(int(LONG_POLL)),
        lock_duration=str(int(LOCK)),
        work="0.3-1.0",
        FAULT_HOSTS_FILE=str(cluster.hosts),
    )
    if not wait_until(_resolved(lab, 2, 0), timeout=120):
        raise RuntimeError("the worker did not resolve the name to both nodes")
    if not lab.wait_finished(warm, BOUND):
        raise RuntimeError("the work on both nodes did not finish before the fault")

    # Node A leaves the name; its poll waits on (both nodes idle: a poll in flight at each).
    seen = _log_lines(lab, "resolves to 1 engine nodes")
    lab.mark("fault-start")
    cluster.resolve_to(ADDRESSES[1:])
    if not wait_until(_resolved(lab, 1, seen), timeout=90):
        raise RuntimeError("the worker did not see node A leave the name")
    noticed = time.time()
    batch = cluster.start(0, MAX_IN_FLIGHT)  # woken: node A's poll only
    started = time.time()
    batch_done = lab.wait_finished(batch, BOUND)
    batch_s = round(time.time() - started, 1)
    caught = _in_flight_catch(lab, noticed)

    # Node A comes back; work on both again.
    seen = _log_lines(lab, "resolves to 2 engine nodes")
    cluster.resolve_to(ADDRESSES)
    back = bool(wait_until(_resolved(lab, 2, seen), timeout=90))
    lab.mark("fault-end")
    cluster.start(0, count // 4)
    cluster.start(1, count // 4)

    lab.notes.update(batch_seconds=batch_s, caught_in_flight=caught)
    verdict = _finish(lab, _expectation(batch_done, caught, back))
    top = peak_locked(list(history.read(lab.history_path)))  # the workers have stopped now
    verdict["checks"]["S27 max_in_flight"] = {
        "ok": top <= MAX_IN_FLIGHT,
        "detail": f"at most {top} tasks locked at once (max_in_flight {MAX_IN_FLIGHT})",
    }
    verdict["ok"] = all(c["ok"] for c in verdict["checks"].values())
    return verdict


def _expectation(batch_done: bool, caught: int, back: bool) -> Expectation:
    """S27's own criteria, beside the checker's invariants."""
    within = f"within {BOUND:.0f} s (lock {LOCK:.0f} s)"
    return Expectation(
        reruns=False,
        extra={
            "S27 the leaving node's poll locked tasks": (
                caught > 0,
                f"{caught} tasks came from node A's poll in flight when it left",
            ),
            "S27 no task waits for its lock": (
                batch_done,
                f"the batch started on node A finished {within}"
                if batch_done
                else f"the batch started on node A did not finish {within}",
            ),
            "S27 the node came back": (back, "the worker resolved both nodes again"),
        },
    )


NODES_SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {"S27": s27}
