# ruff: noqa: T201 - a command-line tool that prints
"""Pickup latency with an engine cluster: one URL through node 1 vs every node.

Two bundled engines on one PostgreSQL database; one camunda-relay worker (in this process, a
reply handler that records when it starts) with ``CAMUNDA_URL`` naming node 1 only, then
both nodes. Instances are started one at a time, first on node 1, then on node 2, at a light
rate; the figure is task created (the start call's answer: the task is committed with it) ->
handler start, p50 and p95, per node the instance was started on. An engine's long poll is
woken only by tasks created on its own node, so with one URL a task created on node 2 waits
for node 1's poll to end (up to ``CAMUNDA_LONG_POLL``).

    make bench-cluster                      # 20 instances per node and configuration
    python -m bench.cluster --instances 40 --interval 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
from tests.support import engine as engine_support
from tests.support import postgres as pg
from tests.support.tools import free_port, postgres_bin_dir

from camunda_relay import Router, Settings, Task, Worker, bundled_engine


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def _measure(
    engines: list[engine_support.Engine], urls: str, instances: int, interval: float
) -> dict[str, list[float]]:
    started: dict[str, float] = {}
    picked: dict[str, float] = {}
    all_picked = asyncio.Event()
    router = Router()

    @router.task(engine_support.TOPIC, reply=engine_support.MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        if task.business_key is not None:
            picked.setdefault(task.business_key, time.monotonic())
            if started and len(picked) >= instances * len(engines):
                all_picked.set()
        return {}

    settings = Settings(
        url=urls,
        user=engine_support.USER,
        password=engine_support.PASSWORD,
        journal=":memory:",
        long_poll=timedelta(seconds=20),
        reconcile="off",
    )
    keys: dict[str, list[str]] = {"node 1": [], "node 2": []}
    async with Worker(router, settings) as worker:
        running = asyncio.ensure_future(worker.run())
        await asyncio.sleep(2)  # the worker's first long polls are in place
        for node, engine in zip(keys, engines, strict=True):
            async with httpx.AsyncClient(
                base_url=engine.rest_url, auth=(engine_support.USER, engine_support.PASSWORD)
            ) as rest:
                for _ in range(instances):
                    key = f"cluster-{uuid.uuid4().hex[:10]}"
                    answer = await rest.post(
                        f"/process-definition/key/{engine_support.PROCESS_KEY}/start",
                        json={"businessKey": key},
                    )
                    started[key] = time.monotonic()
                    answer.raise_for_status()
                    keys[node].append(key)
                    await asyncio.sleep(interval)
        with contextlib.suppress(TimeoutError):  # the figures say how many were picked up
            await asyncio.wait_for(all_picked.wait(), timeout=120)
        worker.stop()
        await running
    return {
        node: [(picked[key] - started[key]) * 1000 for key in node_keys if key in picked]
        for node, node_keys in keys.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=20, help="per node and configuration")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between starts")
    args = parser.parse_args()
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise SystemExit("bench-cluster needs a PostgreSQL server (Debian's postgresql package)")
    jar = bundled_engine.ensure_built(progress=print)
    base = Path(tempfile.mkdtemp(prefix="camunda-relay-cluster-"))
    pg_base = Path(tempfile.mkdtemp(prefix="camunda-relay-cluster-pg-"))
    server = pg.init_server(bin_dir, pg_base, free_port())
    engines: list[engine_support.Engine] = []
    try:
        server.create_database("cluster")
        database = bundled_engine.Postgres(server.jdbc_url("cluster"), pg.USER, pg.PASSWORD)
        for node in (1, 2):
            engines.append(
                engine_support.start_engine(jar, base / f"engine-{node}", free_port(), database)
            )
        one = engines[0].rest_url
        every = ",".join(engine.rest_url for engine in engines)
        print(f"{args.instances} instances per node, one every {args.interval:g} s")
        print("| worker's CAMUNDA_URL | started on | p50 ms | p95 ms | max ms | n |")
        print("|---|---|---|---|---|---|")
        for label, urls in (("node 1 only", one), ("both nodes", every)):
            figures = asyncio.run(_measure(engines, urls, args.instances, args.interval))
            for node, values in figures.items():
                print(
                    f"| {label} | {node} | {statistics.median(values):,.0f} | "
                    f"{_percentile(values, 0.95):,.0f} | {max(values):,.0f} | {len(values)} |"
                )
    finally:
        for engine in engines:
            bundled_engine.stop(engine.info.pid)
        server.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(pg_base, ignore_errors=True)


if __name__ == "__main__":
    main()
