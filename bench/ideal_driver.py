# ruff: noqa: T201 - a command-line tool that prints; timeouts are plain numbers
"""The ideal driver: raw REST calls, best batching and concurrency, no handler work at all.

It stands for the engine's own limit for the seed process: one long-polling fetcher locks
tasks in large batches (no variables fetched), and ``--lanes`` coroutines, each on its own
kept-alive connection, complete a task and correlate its message by process instance id.
No journal, no retries beyond "nobody waits yet", no logging. Runs until SIGTERM.

With ``--hold`` (the scale run's engine limit) it completes each task at once and marks it
taken on, but correlates nothing until SIGUSR1; then ``--lanes`` coroutines correlate every
held instance as fast as the engine takes messages: the engine's own limit for the drain.

    python -m bench.ideal_driver --url http://127.0.0.1:8080/engine-rest --lanes 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time

from bench import marks
from bench.rawhttp import Connection, Endpoint, HttpError

TOPIC = "messageSending"
MESSAGE = "sample_response"


async def correlate(conn: Connection, instance_id: str) -> None:
    message = {"messageName": MESSAGE, "processInstanceId": instance_id}
    for _ in range(50):
        try:
            await conn.request("POST", "/message", message)
            return
        except HttpError as error:  # nobody waits yet: cannot happen here
            if error.status != 400:
                raise
            await asyncio.sleep(0.05)


async def run(
    endpoint: Endpoint, lanes: int, max_tasks: int, worker_id: str, *, hold: bool = False
) -> None:
    queue: asyncio.Queue[str | tuple[str, str]] = asyncio.Queue()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    room = asyncio.Event()
    room.set()
    held: asyncio.Queue[str] = asyncio.Queue()
    released = asyncio.Event()
    if hold:
        loop.add_signal_handler(signal.SIGUSR1, released.set)

    async def fetcher() -> None:
        conn = Connection(endpoint)
        body = {
            "workerId": worker_id,
            "maxTasks": max_tasks,
            "asyncResponseTimeout": 5000,
            "topics": [
                {
                    "topicName": TOPIC,
                    "lockDuration": 120_000,
                    "variables": [],
                    "deserializeValues": False,
                }
            ],
        }
        while not stop.is_set():
            await room.wait()
            try:
                _, tasks = await conn.request("POST", "/external-task/fetchAndLock", body)
            except (OSError, HttpError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.2)
                continue
            for task in tasks:
                if not hold:
                    marks.mark(task["processInstanceId"])
                queue.put_nowait((task["id"], task["processInstanceId"]))
            if queue.qsize() >= 2 * max_tasks:
                room.clear()

    async def lane() -> None:
        conn = Connection(endpoint)
        complete = {"workerId": worker_id}
        while True:
            task_id, instance_id = await queue.get()  # type: ignore[misc]
            if queue.qsize() < max_tasks:
                room.set()
            try:
                await conn.request("POST", f"/external-task/{task_id}/complete", complete)
                if hold:
                    marks.mark(instance_id)
                    held.put_nowait(instance_id)
                else:
                    await correlate(conn, instance_id)
            except (OSError, HttpError, asyncio.IncompleteReadError) as error:
                print(f"ideal driver: {error}", flush=True)

    async def drain_lane() -> None:
        await released.wait()
        conn = Connection(endpoint)
        while True:
            instance_id = await held.get()
            try:
                await correlate(conn, instance_id)
            except (OSError, HttpError, asyncio.IncompleteReadError) as error:
                print(f"ideal driver: {error}", flush=True)

    workers = [asyncio.ensure_future(lane()) for _ in range(lanes)]
    if hold:
        workers += [asyncio.ensure_future(drain_lane()) for _ in range(lanes)]
    fetch = asyncio.ensure_future(fetcher())
    await stop.wait()
    for job in [fetch, *workers]:
        job.cancel()
    await asyncio.gather(fetch, *workers, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=os.environ.get("CAMUNDA_URL"))
    parser.add_argument("--lanes", type=int, default=8)
    parser.add_argument("--max-tasks", type=int, default=100)
    parser.add_argument("--hold", action="store_true", help="correlate only after SIGUSR1")
    args = parser.parse_args()
    endpoint = Endpoint(
        args.url, os.environ.get("CAMUNDA_USER"), os.environ.get("CAMUNDA_PASSWORD")
    )
    worker_id = f"ideal-{os.getpid()}-{int(time.time())}"
    asyncio.run(run(endpoint, args.lanes, args.max_tasks, worker_id, hold=args.hold))


if __name__ == "__main__":
    main()
