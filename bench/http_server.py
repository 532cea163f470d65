# ruff: noqa: T201 - a command-line tool that prints
"""The worker's HTTP server: CPU per request and memory per idle connection.

    python -m bench.http_server                    # camunda_relay.serve as checked out
    python -m bench.http_server --src OTHER/src    # another checkout's (the code before)

The server runs in a process of its own (``--serve``): ``camunda_relay.serve.HttpServer``
with a worker's metrics (a worker on the in-process fake engine) and ``POST /reply`` on a
SQLite journal. The client, 8 requests at once on kept-alive connections, measures the
server process's CPU per request (median of three rounds of 1,000 after 100 to warm up) for
``GET /metrics``, ``POST /reply`` with a wrong secret (401) and with the right secret and an
unknown token (404: a journal lookup). Then 1,000 half-sent requests are left open, and the
server's resident memory and threads are read before and during 8 s after (the most).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tests.support.tools import free_port

from bench.procstat import cpu_seconds, rss_mb

SECRET = "bench-reply-secret-0123456789"  # noqa: S105 - a benchmark's
ROUNDS, N, WARM = 3, 1000, 100


def serve(port: int, journal: str) -> None:
    from camunda_relay import EngineClient, Router, Settings, Task, Worker
    from camunda_relay.replies.http import reply_routes
    from camunda_relay.serve import serve_worker
    from camunda_relay.testing.fake_engine import FakeEngine

    settings = Settings(url="http://fake-engine/engine-rest", journal=journal, reply_secret=SECRET)
    router = Router()

    @router.task("messageSending", reply="sample_response")
    async def handle(task: Task) -> dict[str, object]:
        return {}

    async def main() -> None:
        client = EngineClient(settings, transport=FakeEngine().transport())
        worker = Worker(router, settings, client=client)
        server = serve_worker(worker, "127.0.0.1", port, routes=reply_routes(settings))
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()
        await worker.shutdown()

    asyncio.run(main())


async def _rounds(port: int, pid: int, method: str, path: str, **options: object) -> float:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=8)
    ) as web:
        gate = asyncio.Semaphore(8)

        async def one() -> None:
            async with gate:
                await web.request(method, path, **options)  # type: ignore[arg-type]

        await asyncio.gather(*(one() for _ in range(WARM)))
        costs = []
        for _ in range(ROUNDS):
            before = cpu_seconds(pid)
            await asyncio.gather(*(one() for _ in range(N)))
            costs.append((cpu_seconds(pid) - before) / N * 1000)
    return statistics.median(costs)


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def _idle(port: int, pid: int, count: int) -> dict[str, float]:
    before_rss, before_threads = rss_mb(pid), _threads(pid)
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"POST /reply HTTP/1.1\r\nHost: worker\r\nX-Slow: x")
        sockets.append(sock)
    after_rss, after_threads = 0.0, 0
    for _ in range(16):  # a thread per connection starts slowly on a busy machine
        time.sleep(0.5)
        after_rss, after_threads = max(after_rss, rss_mb(pid)), max(after_threads, _threads(pid))
    for sock in sockets:
        sock.close()
    return {
        "rss_kib_per_connection": (after_rss - before_rss) * 1024 / count,
        "threads_before": before_threads,
        "threads_after": after_threads,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", default=None)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--journal", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.journal)
        return 0
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(args.src).resolve()) if args.src else "", str(root)])
    )
    port = free_port()
    journal = str(Path(tempfile.mkdtemp(prefix="relay-bench-http-")) / "journal.sqlite3")
    command = [sys.executable, "-m", "bench.http_server", "--serve", str(port)]
    server = subprocess.Popen(
        [*command, "--journal", journal],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        auth = {"Authorization": f"Bearer {SECRET}"}
        body = json.dumps({"token": "t" * 43, "variables": {"x": 1}}).encode()
        result = {
            "GET /metrics": asyncio.run(_rounds(port, server.pid, "GET", "/metrics")),
            "POST /reply 401": asyncio.run(
                _rounds(port, server.pid, "POST", "/reply", content=body)
            ),
            "POST /reply 404": asyncio.run(
                _rounds(port, server.pid, "POST", "/reply", content=body, headers=auth)
            ),
            **_idle(port, server.pid, 1000),
        }
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=60)
    print(json.dumps({"src": args.src or "this checkout", **result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
