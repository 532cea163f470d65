# ruff: noqa: T201 - a command-line tool that prints
"""CPU per request of the HTTP stacks camunda-relay could use, against the real bundled engine.

    python -m bench.http_stacks [--requests 600] [--rounds 5]

Stacks: httpx, httpx2, httpx with the httpx-aiohttp transport, aiohttp directly, and the raw
asyncio client :mod:`bench.rawhttp` as the floor. Kinds: ``GET /version`` (the client's
overhead; the engine's cost is small) and ``POST /message`` to a name nobody waits for (HTTP
400: the engine's correlation path without side effects). 32 requests in flight on kept-alive
connections; the contenders interleaved (A B C D E A B C D E ...), medians and min-max over
the rounds. CPU is this process's (``time.process_time``); latency is indicative only (two
cores shared with the engine and other work).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.support import engine as engine_support
from tests.support.tools import free_port

from bench import report
from bench.rawhttp import Connection, Endpoint, HttpError

ROOT = Path(__file__).resolve().parents[1]
INFLIGHT = 32
KINDS = {
    "GET /version": ("GET", "/version", None, 200),
    "POST /message (400)": (
        "POST",
        "/message",
        {"messageName": "nobody-waits-for-this", "correlationKeys": {}},
        400,
    ),
}
One = Callable[[], Awaitable[None]]


async def _run(one: One, n: int) -> dict[str, float]:
    gate = asyncio.Semaphore(INFLIGHT)
    lat: list[float] = []

    async def go() -> None:
        async with gate:
            t = time.perf_counter()
            await one()
            lat.append(time.perf_counter() - t)

    await asyncio.gather(*(go() for _ in range(INFLIGHT * 2)))  # open the connections, warm up
    lat.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(go() for _ in range(n)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    q = statistics.quantiles(lat, n=20)
    return {
        "cpu_ms": cpu / n * 1000,
        "p50_ms": q[9] * 1000,
        "p95_ms": q[18] * 1000,
        "rps": n / wall,
    }


async def httpx_like(module: Any, url: str, kind: str, n: int, client_cls: Any = None) -> Any:
    method, path, body, status = KINDS[kind]
    limits = module.Limits(max_connections=INFLIGHT, max_keepalive_connections=INFLIGHT)
    cls = client_cls or module.AsyncClient
    extra = {} if client_cls else {"limits": limits}
    auth = module.BasicAuth(engine_support.USER, engine_support.PASSWORD)
    async with cls(base_url=url, auth=auth, **extra) as client:

        async def one() -> None:
            response = await client.request(method, path, json=body)
            assert response.status_code == status, response.text

        return await _run(one, n)


async def with_httpx(url: str, kind: str, n: int) -> Any:
    import httpx

    return await httpx_like(httpx, url, kind, n)


async def with_httpx2(url: str, kind: str, n: int) -> Any:
    import httpx2  # type: ignore[import-not-found]

    return await httpx_like(httpx2, url, kind, n)


async def with_httpx_aiohttp(url: str, kind: str, n: int) -> Any:
    import httpx
    import httpx_aiohttp  # type: ignore[import-not-found]

    return await httpx_like(httpx, url, kind, n, httpx_aiohttp.HttpxAiohttpClient)


async def with_aiohttp(url: str, kind: str, n: int) -> Any:
    import aiohttp  # type: ignore[import-not-found]

    method, path, body, status = KINDS[kind]
    auth = aiohttp.BasicAuth(engine_support.USER, engine_support.PASSWORD)
    connector = aiohttp.TCPConnector(limit=INFLIGHT)
    async with aiohttp.ClientSession(connector=connector, auth=auth) as session:

        async def one() -> None:
            async with session.request(method, url + path, json=body) as response:
                await response.read()
                assert response.status == status

        return await _run(one, n)


async def with_raw(url: str, kind: str, n: int) -> Any:
    method, path, body, status = KINDS[kind]
    endpoint = Endpoint(url, engine_support.USER, engine_support.PASSWORD)
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(INFLIGHT):
        pool.put_nowait(Connection(endpoint))

    async def one() -> None:
        conn = await pool.get()
        try:
            await conn.request(method, path, body, expect=(status,))
        except HttpError:
            raise
        finally:
            pool.put_nowait(conn)

    try:
        return await _run(one, n)
    finally:
        while not pool.empty():
            pool.get_nowait().close()


STACKS = {
    "httpx": (with_httpx, "httpx"),
    "httpx2": (with_httpx2, "httpx2"),
    "httpx + httpx-aiohttp": (with_httpx_aiohttp, "httpx-aiohttp"),
    "aiohttp": (with_aiohttp, "aiohttp"),
    "raw asyncio (bench.rawhttp)": (with_raw, None),
}


def _version(dist: str | None) -> str:
    if dist is None:
        return "-"
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def table(results: dict[str, Any]) -> str:
    out = [
        "| stack | version | request | CPU ms/request, median (min-max) | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for stack, kinds in results["stacks"].items():
        for kind, rounds in kinds.items():
            cpu = [r["cpu_ms"] for r in rounds]
            p50 = statistics.median(r["p50_ms"] for r in rounds)
            p95 = statistics.median(r["p95_ms"] for r in rounds)
            out.append(
                f"| {stack} | {results['versions'][stack]} | {kind} | "
                f"{statistics.median(cpu):.3f} ({min(cpu):.3f}-{max(cpu):.3f}) | "
                f"{p50:.1f} | {p95:.1f} |"
            )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=600, help="per stack, kind and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    from camunda_relay import bundled_engine

    stacks = {}
    for name, (fn, dist) in STACKS.items():
        if _version(dist) != "not installed":
            stacks[name] = fn
    jar = bundled_engine.ensure_built()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    results: dict[str, Any] = {
        "run": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "python -m bench.http_stacks "
            + f"--requests {args.requests} --rounds {args.rounds}",
            "git_commit": commit,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
            "in_flight": INFLIGHT,
        },
        "versions": {name: _version(STACKS[name][1]) for name in stacks},
        "stacks": {name: {kind: [] for kind in KINDS} for name in stacks},
    }
    with tempfile.TemporaryDirectory() as state:
        engine = engine_support.start_engine(jar, Path(state), free_port(), None)
        try:
            for r in range(args.rounds):
                for kind in KINDS:
                    for name, fn in stacks.items():
                        res = asyncio.run(fn(engine.rest_url, kind, args.requests))
                        results["stacks"][name][kind].append(res)
                        print(f"round {r + 1} {name:28} {kind:20} {res['cpu_ms']:.3f} ms CPU")
        finally:
            bundled_engine.stop(engine.info.pid)
    text = table(results)
    print(text)
    (ROOT / "docs/benchmarks-http.json").write_text(json.dumps(results, indent=2) + "\n")
    run = results["run"]
    header = (
        f"{run['started']}, commit {run['git_commit']}, Python {run['python']}, "
        f"{run['machine']}, {INFLIGHT} in flight; `{run['command']}`. CPU is the client "
        "process's; latency is indicative only.\n\n"
    )
    report.write_markdown(
        ROOT / "docs/benchmarks.md", header + text, "http", "python -m bench.http_stacks"
    )


if __name__ == "__main__":
    main()
