"""The worker's HTTP server under abuse, against a running worker on the real engine
(``make abuse``; not part of ``make test``: it measures, it asserts nothing timed).

A bundled engine, a ``camunda-relay worker`` with ``CAMUNDA_HTTP_PORT`` and
``CAMUNDA_REPLY_SECRET`` (JSON log lines), a batch of seed-process instances for it to drain,
and meanwhile:

- ``--slow`` slow connections (default 1,000): each sends the start of a ``POST /reply`` and
  then one byte a second; one the server closes is opened again a second later;
- ``--bad`` requests with a wrong secret (default 1,000), 50 at a time, each announcing and
  sending a 64 KiB body;
- ``GET /healthz`` on a new connection every half second (a kubelet's probe), 5 s timeout.

Printed at the end: whether every instance finished and how long the drain took, the probe's
worst latency and failures, the worker's most threads and largest resident memory (sampled
from /proc every half second), the log's lines and bytes, tracebacks in it and lines that are
not JSON, and what the abusers saw (answers by status, connections closed by the server).
``--src DIR`` runs the worker from another checkout's ``src`` (the code before a change).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from camunda_relay import bundled_engine
from harness.lab import free_port, wait_until

SECRET = "abuse-check-reply-secret-0123456789"  # noqa: S105 - a test secret
USER, PASSWORD = "relayabuse", "abuse-password-5e1c"
PROCESS_KEY = "correlation-message"


@dataclass
class Figures:
    probe_latencies: list[float] = field(default_factory=list)
    probe_failures: collections.Counter[str] = field(default_factory=collections.Counter)
    threads: list[int] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    bad_statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    slow_opened: int = 0
    slow_closed_by_server: int = 0
    drained_in: float | None = None
    started_in: float = 0.0


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _proc(pid: int) -> tuple[int, int]:
    threads = rss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return threads, rss


async def _sample(pid: int, figures: Figures, stop: asyncio.Event) -> None:
    while not stop.is_set():
        threads, rss = _proc(pid)
        if threads:
            figures.threads.append(threads)
            figures.rss_kib.append(rss)
        await asyncio.sleep(0.5)


async def _probe(port: int, figures: Figures, stop: asyncio.Event) -> None:
    """``GET /healthz`` every half second from a process of its own (so that the abusers'
    event loop does not delay it): one line per probe, ``latency status``."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harness.abuse", "--probe", str(port), stdout=subprocess.PIPE
    )
    assert probe.stdout is not None
    try:
        while not stop.is_set():
            line = await probe.stdout.readline()
            if not line:
                break
            latency, status = line.decode().split()
            figures.probe_latencies.append(float(latency))
            if status != "200":
                figures.probe_failures[status] += 1
    finally:
        probe.terminate()
        await probe.wait()


def _probe_loop(port: int) -> None:
    while True:
        started = time.monotonic()
        try:
            status = str(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code)
        except httpx.HTTPError as error:
            status = type(error).__name__
        say(f"{time.monotonic() - started:.4f} {status}")
        time.sleep(0.5)


async def _slow_one(port: int, figures: Figures, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(1)
            continue
        figures.slow_opened += 1
        try:
            writer.write(b"POST /reply HTTP/1.1\r\nHost: worker\r\nX-Slow: ")
            while not stop.is_set():
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(1024), 1.0) == b"":
                        figures.slow_closed_by_server += 1
                        break
                writer.write(b"x")
        except OSError:
            figures.slow_closed_by_server += 1
        finally:
            writer.close()
        await asyncio.sleep(1)  # then again, as an attacker would (at a rate the machine bears)


async def _bad_secrets(port: int, count: int, figures: Figures) -> None:
    body = json.dumps({"token": "x" * 43, "variables": {"pad": "p" * 65_000}}).encode()
    gate = asyncio.Semaphore(50)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as web:

        async def one() -> None:
            async with gate:
                try:
                    answer = await web.post(
                        f"http://127.0.0.1:{port}/reply",
                        content=body,
                        headers={
                            "Authorization": "Bearer wrong-secret",
                            "Content-Type": "application/json",
                        },
                    )
                    figures.bad_statuses[str(answer.status_code)] += 1
                except httpx.HTTPError as error:
                    figures.bad_statuses[type(error).__name__] += 1

        await asyncio.gather(*(one() for _ in range(count)))


def _start_instances(rest: httpx.Client, count: int) -> None:
    for n in range(count):
        rest.post(
            f"/process-definition/key/{PROCESS_KEY}/start", json={"businessKey": f"abuse-{n}"}
        ).raise_for_status()


def _finished(rest: httpx.Client) -> int:
    answer = rest.get(
        "/history/process-instance/count",
        params={"processDefinitionKey": PROCESS_KEY, "finished": "true"},
    )
    return int(answer.json()["count"])


async def _abuse(args: argparse.Namespace, port: int, pid: int, rest: httpx.Client) -> Figures:
    figures = Figures()
    stop = asyncio.Event()
    started = time.monotonic()
    background = [
        asyncio.ensure_future(_sample(pid, figures, stop)),
        asyncio.ensure_future(_probe(port, figures, stop)),
        *(asyncio.ensure_future(_slow_one(port, figures, stop)) for _ in range(args.slow)),
    ]
    bad = asyncio.ensure_future(_bad_secrets(port, args.bad, figures))
    await asyncio.sleep(3)  # the slow connections in place, the bad requests under way
    started = time.monotonic()
    await asyncio.to_thread(_start_instances, rest, args.instances)
    figures.started_in = time.monotonic() - started
    say(f"{args.instances} instances started under abuse in {figures.started_in:.1f} s")
    deadline = started + args.timeout
    while time.monotonic() < deadline:
        done = await asyncio.to_thread(_finished, rest)
        if done >= args.instances and figures.drained_in is None:
            figures.drained_in = time.monotonic() - started
        if (
            figures.drained_in is not None
            and bad.done()
            and time.monotonic() - started > args.min_seconds
        ):
            break
        await asyncio.sleep(1)
    stop.set()
    await asyncio.wait_for(bad, 60)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    return figures


def _start_worker(
    args: argparse.Namespace, engine_port: int, port: int, folder: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")}
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    env.update(
        CAMUNDA_URL=f"http://127.0.0.1:{engine_port}/engine-rest",
        CAMUNDA_USER=USER,
        CAMUNDA_PASSWORD=PASSWORD,
        CAMUNDA_JOURNAL=str(folder / "journal.sqlite3"),
        CAMUNDA_HTTP_PORT=str(port),
        CAMUNDA_REPLY_SECRET=SECRET,
        CAMUNDA_LOG_FORMAT="json",
        CAMUNDA_LONG_POLL="5",
        SAMPLE_WORK_SECONDS="0.5",
    )
    log = (folder / "worker.log").open("wb")
    command = [
        sys.executable,
        "-m",
        "camunda_relay.cli",
        "worker",
        "camunda_relay.examples.conception",
    ]
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _report(args: argparse.Namespace, figures: Figures, finished: int, log: Path) -> None:
    lines = log.read_text(errors="replace").splitlines()
    not_json = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json += 1
    rss = figures.rss_kib
    latencies = sorted(figures.probe_latencies) or [float("nan")]
    worst, over = latencies[-1], sum(latency > 1.0 for latency in latencies)
    p50, p95 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.95)]
    rows = [
        ("code", args.src or "this checkout"),
        ("instances finished", f"{finished} of {args.instances}"),
        (
            "drain (from the first start)",
            f"{figures.drained_in:.1f} s" if figures.drained_in else "not drained",
        ),
        ("/healthz probes", f"{len(figures.probe_latencies)}: p50 {p50:.3f} s, p95 {p95:.3f} s"),
        ("/healthz worst", f"{worst:.3f} s, {over} over 1 s"),
        ("/healthz failures", dict(figures.probe_failures) or "none"),
        ("worker threads", f"max {max(figures.threads, default=0)} (first {figures.threads[:1]})"),
        ("worker RSS", f"max {max(rss, default=0) / 1024:.0f} MiB (first {rss[:1]} KiB)"),
        ("log", f"{len(lines)} lines, {log.stat().st_size} bytes"),
        (
            "log: tracebacks / not JSON",
            f"{sum('Traceback' in line for line in lines)} / {not_json}",
        ),
        ("bad-secret answers", dict(figures.bad_statuses)),
        (
            "slow connections",
            f"{figures.slow_opened} opened, {figures.slow_closed_by_server} closed by the server",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        say(f"{name:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--slow", type=int, default=1000)
    parser.add_argument("--bad", type=int, default=1000)
    parser.add_argument("--min-seconds", type=float, default=30.0, help="abuse at least this long")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--src", default=None, help="run the worker from this src folder")
    parser.add_argument("--keep", action="store_true", help="keep the folder (engine, log)")
    parser.add_argument("--probe", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe is not None:
        _probe_loop(args.probe)
        return 0
    folder = Path(tempfile.mkdtemp(prefix="relay-abuse-"))
    options = bundled_engine.EngineOptions(
        port=free_port(),
        state_dir=folder / "engine",
        user=USER,
        password=PASSWORD,
        ready_timeout=300.0,
    )
    say(f"engine starting ({folder})")
    engine = bundled_engine.start(options)
    worker = None
    try:
        rest = httpx.Client(
            base_url=f"{options.base_url}/engine-rest", auth=(USER, PASSWORD), timeout=60
        )
        port = free_port()
        worker = _start_worker(args, options.port, port, folder)
        wait_until(lambda: _ready(port), timeout=120)
        say("the worker is ready; abusing")
        figures = asyncio.run(_abuse(args, port, worker.pid, rest))
        finished = _finished(rest)
    finally:
        if worker is not None:
            worker.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=60)
            if worker.poll() is None:
                worker.kill()
        bundled_engine.stop(engine.pid)
    _report(args, figures, finished, folder / "worker.log")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if finished >= args.instances else 1


def _ready(port: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    return False


if __name__ == "__main__":
    raise SystemExit(main())
