# ruff: noqa: T201 - a command-line tool that prints
"""CPU per request of HTTP clients, against :mod:`bench.stub_engine` (POST .../complete → 204).

    python -m bench.client_cost                       # httpx as installed
    PYTHONPATH=/path/with/sniffio python -m bench.client_cost

Besides the bare clients, the engine client itself (``EngineClient.complete``, 32 at once, its
gate and error mapping included) on each of its HTTP stacks: aiohttp (its default) and httpx
(an ``httpx.AsyncHTTPTransport`` passed as ``transport``).

Median of three rounds of 3,000 requests each, after 300 to warm up.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from tests.support.tools import free_port

from bench.rawhttp import Connection, Endpoint
from camunda_relay import EngineClient
from camunda_relay.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
N = 3000


async def measure(one: Callable[[int], Awaitable[None]], concurrency: int) -> tuple[float, float]:
    gate = asyncio.Semaphore(concurrency)

    async def go(i: int) -> None:
        async with gate:
            await one(i)

    await asyncio.gather(*(go(i) for i in range(300)))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(go(i) for i in range(N)))
    return (time.process_time() - cpu) / N * 1000, N / (time.perf_counter() - wall)


async def with_httpx(port: int, concurrency: int, limits: int | None) -> tuple[float, float]:
    extra = {}
    if limits is not None:
        extra["limits"] = httpx.Limits(max_connections=limits, max_keepalive_connections=limits)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}/engine-rest",
        auth=httpx.BasicAuth("a", "b"),
        **extra,  # type: ignore[arg-type]
    ) as client:

        async def one(i: int) -> None:
            response = await client.post(f"/external-task/t{i}/complete", json={"workerId": "w"})
            assert response.status_code == 204

        return await measure(one, concurrency)


async def with_aiohttp(port: int, concurrency: int) -> tuple[float, float]:
    import aiohttp

    headers = {"Authorization": aiohttp.encode_basic_auth("a", "b")}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{port}", connector=connector, headers=headers
    ) as session:

        async def one(i: int) -> None:
            path = f"/engine-rest/external-task/t{i}/complete"
            async with session.post(path, json={"workerId": "w"}) as response:
                assert response.status == 204
                await response.read()

        return await measure(one, concurrency)


async def with_engine_client(port: int, stack: str) -> tuple[float, float]:
    settings = Settings(url=f"http://127.0.0.1:{port}/engine-rest", user="a", password="b")  # noqa: S106
    transport = httpx.AsyncHTTPTransport() if stack == "httpx" else None
    async with EngineClient(settings, transport=transport) as client:

        async def one(i: int) -> None:
            await client.complete(f"t{i}", "w")

        return await measure(one, 32)


async def with_raw(port: int, concurrency: int) -> tuple[float, float]:
    endpoint = Endpoint(f"http://127.0.0.1:{port}/engine-rest", "a", "b")
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(concurrency):
        pool.put_nowait(Connection(endpoint))

    async def one(i: int) -> None:
        conn = await pool.get()
        try:
            await conn.request("POST", f"/external-task/t{i}/complete", {"workerId": "w"})
        finally:
            pool.put_nowait(conn)

    return await measure(one, concurrency)


def main() -> None:
    try:
        import sniffio  # noqa: F401

        label = "httpx + sniffio"
    except ImportError:
        label = "httpx, no sniffio"
    port = free_port()
    stub = subprocess.Popen(
        [sys.executable, "-m", "bench.stub_engine", "--port", str(port), "--tasks", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert stub.stdout is not None
    stub.stdout.readline()
    cases: list[tuple[str, Callable[[], Awaitable[tuple[float, float]]]]] = [
        (f"{label}, 1 at a time", lambda: with_httpx(port, 1, None)),
        (f"{label}, 32 at once, default limits", lambda: with_httpx(port, 32, None)),
        (f"{label}, 32 at once, limits 32/32", lambda: with_httpx(port, 32, 32)),
        ("raw asyncio streams (bench.rawhttp), 32 at once", lambda: with_raw(port, 32)),
        ("EngineClient on aiohttp, 32 at once", lambda: with_engine_client(port, "aiohttp")),
        ("EngineClient on httpx, 32 at once", lambda: with_engine_client(port, "httpx")),
    ]
    try:
        import aiohttp  # noqa: F401

        cases.append(("aiohttp, 32 at once", lambda: with_aiohttp(port, 32)))
    except ImportError:
        pass
    try:
        for name, case in cases:
            rounds = sorted(asyncio.run(case()) for _ in range(3))
            cpu, rate = rounds[1]
            print(f"{name:52} {cpu:6.3f} ms CPU/request, {rate:6.0f} requests/s")
    finally:
        stub.terminate()
        stub.wait()


if __name__ == "__main__":
    main()
