"""Two engine nodes for a fault scenario (S27): the lab's engine (node A) and a second
bundled engine on the lab's PostgreSQL database (node B), each behind a fault proxy of its
own on its own loopback address at one shared port, so that one name resolving to both
addresses (a hosts-style file, :mod:`harness.hosts`) stands for the cluster, as a Kubernetes
headless Service does. Both proxies write the lab's operation history (for the checker) and
a file of their own (``history-node-a.jsonl``, ``-b``: which node did what).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from camunda_relay import bundled_engine
from harness.faultproxy import ProxyThread
from harness.history import Operation, OperationLog
from harness.lab import CANARY_PAYLOAD, PROCESS_KEY, USER, Lab, free_port

__all__ = ["ADDRESSES", "NAME", "Cluster", "NodeLog", "peak_locked", "start_cluster"]

NAME = "engine-nodes.s27.invalid"  # resolved by the hosts file only
ADDRESSES = ("127.0.0.2", "127.0.0.3")  # node A (it leaves), node B
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
    logs: list[NodeLog]

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
        for log in self.logs:
            log.close()
        bundled_engine.stop(self.engine_b, grace=20)


def start_cluster(lab: Lab) -> Cluster:
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
    logs = [NodeLog(lab.folder / f"history-node-{tag}.jsonl", lab.history) for tag in "ab"]
    try:
        proxies = _proxies(lab, [lab.options.port, options.port], logs)
        rest_b = httpx.Client(
            base_url=f"{options.base_url}/engine-rest", auth=(USER, lab.password), timeout=60
        )
    except BaseException:
        for proxy in proxies:
            proxy.close()
        for log in logs:
            log.close()
        bundled_engine.stop(engine_b, grace=20)
        raise
    cluster = Cluster(lab, engine_b, proxies, [lab.rest, rest_b], lab.folder / "hosts", logs)
    cluster.resolve_to(ADDRESSES)
    return cluster


def _proxies(lab: Lab, upstream: Sequence[int], logs: Sequence[NodeLog]) -> list[ProxyThread]:
    """A proxy per node, on its own address and one port for all (a name's addresses share
    the URL's port); a port taken on one address is tried again with another."""
    for _ in range(20):
        port = free_port()
        proxies: list[ProxyThread] = []
        try:
            for address, engine_port, log in zip(ADDRESSES, upstream, logs, strict=True):
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
