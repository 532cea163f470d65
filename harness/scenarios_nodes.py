"""The fault scenario S27 of FAULTS.md: an engine node leaves the name while its long poll is
in flight (a scale-down behind a Kubernetes headless Service), and that poll then locks tasks.

Two bundled engines on the lab's PostgreSQL database, each behind a fault proxy of its own on
its own loopback address and one shared port (127.0.0.2 and 127.0.0.3): the two addresses of
one name. The worker runs with ``CAMUNDA_URL_RESOLVE=all`` on that name, which a hosts-style
file resolves in the worker process only (``FAULT_HOSTS_FILE``, :mod:`harness.fault_worker`);
the scenario rewrites the file to drop a node and to bring it back. Both proxies write the
lab's operation history (for the checker) and a file of their own (which node did what).

Registered in :data:`harness.scenarios.SCENARIOS`; skipped when no PostgreSQL server is
installed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from camunda_relay import bundled_engine
from harness import history
from harness.checker import Expectation
from harness.faultproxy import ProxyThread
from harness.history import Operation, OperationLog
from harness.lab import CANARY_PAYLOAD, PROCESS_KEY, USER, Lab, free_port, wait_until
from harness.scenarios import Context, _finish, _postgres_available, _run

__all__ = ["NODES_SCENARIOS"]

NAME = "engine-nodes.s27.invalid"  # resolved by the hosts file only
ADDRESSES = ("127.0.0.2", "127.0.0.3")  # node A (it leaves), node B
MAX_IN_FLIGHT = 6
LOCK = 600.0  # s: a task left to its lock would wait this long; the scenario ends far sooner
LONG_POLL = 60.0  # s: a poll is in flight nearly all the time while the worker idles
BOUND = 180.0  # s: the dropped node's batch finishes within this (long poll + work + slack)
_RELEASES = ("complete", "unlock", "failure", "bpmnError")


class NodeLog(OperationLog):
    """One node's own operation history; each operation also goes to the lab's."""

    def __init__(self, path: Path, shared: OperationLog) -> None:
        super().__init__(path)
        self._shared = shared

    def write(self, operation: Operation) -> None:
        super().write(operation)
        self._shared.write(operation)


@dataclasses.dataclass
class Cluster:
    """The second engine, the nodes' proxies and REST clients, and the hosts file."""

    lab: Lab
    engine_b: int
    proxies: list[ProxyThread]
    rests: list[httpx.Client]  # node A's engine (the lab's), node B's engine
    hosts: Path

    @property
    def port(self) -> int:
        return self.proxies[0].port

    def resolve_to(self, addresses: Sequence[str]) -> None:
        text = "".join(f"{address} {NAME}\n" for address in addresses)
        tmp = self.hosts.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.hosts)  # a lookup never reads half a file

    def start(self, node: int, count: int) -> list[str]:
        """``count`` seed instances started at node ``node`` (0: A, 1: B): their tasks are
        created there, so that node's long poll is the one woken."""
        ids = []
        for _ in range(count):
            response = self.rests[node].post(
                f"/process-definition/key/{PROCESS_KEY}/start",
                json={
                    "businessKey": f"{self.lab.name}-{len(self.lab.instances) + len(ids)}",
                    "variables": {"payload": {"value": CANARY_PAYLOAD, "type": "String"}},
                },
            )
            response.raise_for_status()
            ids.append(str(response.json()["id"]))
        self.lab.instances.extend(ids)
        return ids

    def close(self) -> None:
        for rest in self.rests[1:]:
            rest.close()
        for proxy in self.proxies:
            proxy.close()
        bundled_engine.stop(self.engine_b, grace=20)


def _cluster(lab: Lab) -> Cluster:
    """Engine B on the lab's database (engine A is the lab's), and a proxy per node."""
    state = lab.folder / "engine-b"
    shared = lab.folder / "engine" / "worker-password"
    options = dataclasses.replace(
        lab.options,
        port=free_port(),
        state_dir=state,
        worker_password=shared.read_text().strip() if shared.exists() else None,
    )
    engine_b = bundled_engine.start(options, jar=lab.jar).pid
    proxies: list[ProxyThread] = []
    try:
        proxies = _proxies(lab, [lab.options.port, options.port])
        rest_b = httpx.Client(
            base_url=f"{options.base_url}/engine-rest", auth=(USER, lab.password), timeout=60
        )
    except BaseException:
        for proxy in proxies:
            proxy.close()
        bundled_engine.stop(engine_b, grace=20)
        raise
    cluster = Cluster(lab, engine_b, proxies, [lab.rest, rest_b], lab.folder / "hosts")
    cluster.resolve_to(ADDRESSES)
    return cluster


def _proxies(lab: Lab, upstream: Sequence[int]) -> list[ProxyThread]:
    """A proxy per node, on its own address and one port for all (a name's addresses share
    the URL's port); a port taken on one address is tried again with another."""
    for _ in range(20):
        port = free_port()
        proxies: list[ProxyThread] = []
        try:
            for address, engine_port, tag in zip(ADDRESSES, upstream, "ab", strict=True):
                log = NodeLog(lab.folder / f"history-node-{tag}.jsonl", lab.history)
                proxies.append(
                    ProxyThread(
                        engine_port,
                        seed=lab.seed,
                        history=log,
                        listen_host=address,
                        listen_port=port,
                    )
                )
            return proxies
        except OSError:
            for proxy in proxies:
                proxy.close()
    raise RuntimeError("no port free on both loopback addresses")


def _log_lines(lab: Lab, text: str) -> int:
    log = lab.folder / "worker-w1.log"
    return log.read_text(errors="replace").count(text) if log.exists() else 0


def _resolved(lab: Lab, nodes: int, before: int) -> Callable[[], bool]:
    text = f"resolves to {nodes} engine nodes"
    return lambda: _log_lines(lab, text) > before


def peak_locked(operations: Sequence[dict[str, Any]]) -> int:
    """The most tasks the worker held locked at once, as the proxies saw it: a fetch's tasks
    count from its answer, a task's completion (unlock, failure, BPMN error) ends one. Both
    are seen before the worker sees them, and the worker reserves its slots before it asks,
    so a worker within ``max_in_flight`` never shows more here."""
    events: list[tuple[float, int]] = []
    for op in operations:
        if op["result"] != "ok" or op["end_t"] is None:
            continue
        if op["op"].endswith("/fetchAndLock"):
            events.append((op["end_t"], int(op["tasks"] or 0)))
        elif op["op"].rsplit("/", 1)[-1] in _RELEASES:
            events.append((op["end_t"], -1))
    events.sort(key=lambda event: (event[0], event[1]))  # a release first on a tie
    locked = peak = 0
    for _, change in events:
        locked += change
        peak = max(peak, locked)
    return peak


def _in_flight_catch(lab: Lab, noticed: float, started: float) -> int:
    """Tasks brought by node A's polls that began before the worker saw A leave and answered
    after the batch was started: what the in-flight poll locked."""
    ops = history.read(lab.folder / "history-node-a.jsonl")
    return sum(
        int(o["tasks"] or 0)
        for o in ops
        if o["op"].endswith("/fetchAndLock")
        and o["invoke_t"] < noticed
        and (o["end_t"] or 0) >= started
    )


def s27(ctx: Context) -> dict[str, Any]:
    """A node leaves the name mid-poll: work on both nodes, node A dropped from the name
    while its long poll waits, a batch started on A (its poll, and only its, is woken and
    locks tasks), A back in the name, more work on both. What the leaving poll locked runs
    at once; no task waits for its lock; never more than ``max_in_flight`` tasks locked."""

    def body(lab: Lab) -> dict[str, Any]:
        cluster = _cluster(lab)
        try:
            return _scenario(ctx, lab, cluster)
        finally:
            cluster.close()

    if not _postgres_available():
        return {"scenario": "S27", "ok": True, "skipped": "PostgreSQL not installed"}
    return _run(ctx, "S27", body, postgres=True)


def _scenario(ctx: Context, lab: Lab, cluster: Cluster) -> dict[str, Any]:
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
    count = ctx.count(24)
    warm = cluster.start(0, count // 2) + cluster.start(1, count - count // 2)
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
    caught = _in_flight_catch(lab, noticed, started)

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
