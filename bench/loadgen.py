# ruff: noqa: T201, ASYNC109 - a command-line tool that prints; timeouts are plain numbers
"""Starting seed-process instances, watching them finish, and reading the engine's history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.rawhttp import Connection, Endpoint

PROCESS_KEY = "correlation-message"
TOPIC = "messageSending"
TASK_ACTIVITY = "send_message"


def keys(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{number:06d}" for number in range(count)]


@dataclass
class Started:
    ids: dict[str, str] = field(default_factory=dict)  # business key -> instance id
    first: float = 0.0
    last: float = 0.0
    errors: int = 0


async def start_instances(
    endpoint: Endpoint, business_keys: Sequence[str], *, lanes: int, rate: float | None = None
) -> Started:
    """Start one instance per business key: as fast as ``lanes`` connections go, or paced at
    ``rate`` per second (open loop: the schedule does not wait for slow answers)."""
    started = Started(first=time.time())
    path = f"/process-definition/key/{PROCESS_KEY}/start"
    begin = time.monotonic()

    async def start(conn: Connection, key: str) -> None:
        try:
            _, body = await conn.request("POST", path, {"businessKey": key})
            started.ids[key] = body["id"]
        except Exception as error:  # noqa: BLE001 - counted and reported
            started.errors += 1
            if started.errors <= 3:
                print(f"  start failed: {error}", flush=True)

    if rate is None:
        pending = iter(business_keys)

        async def lane() -> None:
            conn = Connection(endpoint)
            for key in pending:
                await start(conn, key)
            conn.close()

        await asyncio.gather(*(lane() for _ in range(lanes)))
    else:
        pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(lanes):
            pool.put_nowait(Connection(endpoint))

        async def paced(conn: Connection, key: str) -> None:
            await start(conn, key)
            pool.put_nowait(conn)

        jobs = []
        for number, key in enumerate(business_keys):
            delay = begin + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = pool.get_nowait() if not pool.empty() else Connection(endpoint)
            jobs.append(asyncio.ensure_future(paced(conn, key)))
        await asyncio.gather(*jobs)
        while not pool.empty():
            pool.get_nowait().close()
    started.last = time.time()
    return started


async def finished_count(conn: Connection, prefix: str) -> int:
    _, body = await conn.request(
        "GET",
        f"/history/process-instance/count?processInstanceBusinessKeyLike={prefix}-%25"
        "&finished=true",
    )
    return int(body["count"])


async def last_end(conn: Connection, prefix: str) -> float | None:
    """When the last finished instance with the prefix ended (one row, however many there
    are: paging through 100,000 historic instances takes the engine minutes)."""
    _, body = await conn.request(
        "GET",
        f"/history/process-instance?processInstanceBusinessKeyLike={prefix}-%25"
        "&finished=true&sortBy=endTime&sortOrder=desc&firstResult=0&maxResults=1",
    )
    return epoch(body[0]["endTime"]) if body else None


async def open_tasks(conn: Connection) -> int:
    _, body = await conn.request("GET", f"/external-task/count?topicName={TOPIC}")
    return int(body["count"])


async def wait_finished(
    conn: Connection,
    prefix: str,
    target: int,
    *,
    starting: asyncio.Future[Any] | None,
    alive: Callable[[], bool],
    stall: float,
    timeout: float,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, float]:
    """Poll until ``target`` instances with the prefix finished; give up when, after all
    starts, nothing moved for ``stall`` seconds and no external task is left (the remaining
    instances wait for a message nobody sends), when the worker died, or after ``timeout``.
    Returns (finished, time.time() when seen)."""
    began = time.monotonic()
    last = -1
    moved = time.monotonic()
    while True:
        count = await finished_count(conn, prefix)
        now = time.monotonic()
        if count != last:
            last, moved = count, now
            if progress is not None:
                progress(count)
        if count >= target:
            return count, time.time()
        starts_done = starting is None or starting.done()
        if starts_done and now - moved > stall and await open_tasks(conn) == 0:
            return count, time.time()
        if not alive() or now - began > timeout:
            return count, time.time()
        await asyncio.sleep(0.5)


async def _paged(conn: Connection, path: str, page: int = 2000) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        joiner = "&" if "?" in path else "?"
        _, body = await conn.request(
            "GET", f"{path}{joiner}firstResult={len(rows)}&maxResults={page}"
        )
        rows.extend(body)
        if len(body) < page:
            return rows


async def instances(conn: Connection, prefix: str) -> list[dict[str, Any]]:
    return await _paged(
        conn,
        f"/history/process-instance?processInstanceBusinessKeyLike={prefix}-%25"
        "&sortBy=instanceId&sortOrder=asc",
    )


async def task_created(conn: Connection) -> dict[str, float]:
    """Process instance id -> when its external task was created (the service task's
    activity instance started; the task is created in that same transaction)."""
    rows = await _paged(
        conn,
        f"/history/activity-instance?activityId={TASK_ACTIVITY}"
        "&sortBy=activityInstanceId&sortOrder=asc",
    )
    return {row["processInstanceId"]: epoch(row["startTime"]) for row in rows}


def epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
