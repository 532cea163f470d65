# ruff: noqa: T201 - a command-line tool that prints
"""The cancellation round's cost: one :meth:`InstanceCheck.gone` over N running reply jobs
whose instances wait at the catch event (the steady state), on a real engine.

    python -m bench.cancel_check --url http://127.0.0.1:8080/engine-rest --user U --password P
    python -m bench.cancel_check ... --jobs 10000 --rounds 5

Starts N instances of the seed process, completes their tasks as a worker would (so each
waits at the catch event), builds the N jobs from the fetched tasks (``--existing``: from N
instances already waiting for the seed's message, without starting any), then times rounds: the
wall time of the round and the worker process's CPU (``time.process_time``), the median of
``--rounds``; and one round more after a tenth of the instances were deleted (the rare round
that also asks history). The engine is left with the instances (a fresh one is best).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from bench import loadgen
from bench.rawhttp import Connection, Endpoint
from camunda_relay.client import EngineClient, TopicRequest
from camunda_relay.replies.cancellation import InstanceCheck
from camunda_relay.replies.correlator import Correlator
from camunda_relay.replies.job import Job, JobState
from camunda_relay.settings import Settings
from camunda_relay.task import Task

TOPIC, MESSAGE, WORKER = "messageSending", "sample_response", "cancel-check-bench"


async def _take(client: EngineClient, count: int) -> list[Task]:
    """Fetch and complete ``count`` seed tasks, ``lanes`` completions at a time."""
    tasks: list[Task] = []
    gate = asyncio.Semaphore(8)

    async def complete(task: Task) -> None:
        async with gate:
            await client.complete(task.id, WORKER, None, None)

    while len(tasks) < count:
        topic = TopicRequest(TOPIC, timedelta(minutes=10), variables=())
        batch = await client.fetch_and_lock(
            WORKER, [topic], max_tasks=500, long_poll=timedelta(seconds=1)
        )
        if not batch:
            await asyncio.sleep(0.2)
            continue
        await asyncio.gather(*(complete(task) for task in batch))
        tasks.extend(batch)
        print(f"  {len(tasks)}/{count} waiting at the catch event", flush=True)
    return tasks


async def _waiting(client: EngineClient, count: int) -> list[Task]:
    """Tasks standing for ``count`` instances already waiting for the seed's message."""
    definition = await client.process_definition("correlation-message")
    assert definition is not None
    found: list[Task] = []
    while len(found) < count:
        page = await client.message_subscriptions(MESSAGE, first=len(found), max_results=5000)
        found += [
            Task(
                id=f"bench-{item['processInstanceId']}",
                topic=TOPIC,
                worker_id=WORKER,
                process_instance_id=item["processInstanceId"],
                process_definition_id=definition["id"],
            )
            for item in page
        ]
        if len(page) < 5000:
            break
    return found[:count]


async def _timed(call: Callable[[], Awaitable[object]], rounds: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        await call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


async def main(args: argparse.Namespace) -> None:
    settings = Settings(
        url=args.url,
        user=args.user,
        password=args.password,
        request_timeout=timedelta(seconds=120),
        journal=":memory:",
    )
    endpoint = Endpoint(args.url, args.user, args.password)
    if not args.existing:
        keys = loadgen.keys("cancel", args.jobs)
        started = await loadgen.start_instances(endpoint, keys, lanes=8)
        print(f"started {len(started.ids)} instances ({started.errors} errors)", flush=True)
    async with EngineClient(settings) as client:
        tasks = await (_waiting(client, args.jobs) if args.existing else _take(client, args.jobs))
        jobs = [Job(task=task, message=MESSAGE, state=JobState.ACKNOWLEDGED) for task in tasks]
        check = InstanceCheck(client, Correlator(client).catch_activities)
        assert await check.gone(jobs) == {}  # warm: the model read once, the JIT of the engine
        wall, cpu = await _timed(lambda: check.gone(jobs), args.rounds)
        print(
            f"round over {len(jobs)} waiting jobs: {wall * 1000:.0f} ms wall, "
            f"{cpu * 1000:.0f} ms worker CPU (median of {args.rounds})"
        )
        conn = Connection(endpoint)
        doomed = jobs[: len(jobs) // 10]
        for job in doomed:
            await conn.request("DELETE", f"/process-instance/{job.task.process_instance_id}")
        conn.close()
        wall, cpu = await _timed(lambda: check.gone(jobs), 1)
        gone = await check.gone(jobs)
        print(
            f"round with {len(doomed)} deleted: {wall * 1000:.0f} ms wall, "
            f"{cpu * 1000:.0f} ms worker CPU; {len(gone)} found gone"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--existing", action="store_true", help="use instances already waiting")
    asyncio.run(main(parser.parse_args()))
