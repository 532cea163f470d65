# ruff: noqa: T201 - a command-line tool that prints
"""What tracing costs: the worker's CPU per reply job with tracing on vs off, and off vs the
code before tracing existed, in one run against the bundled engine.

    python -m bench.tracing_cost --instances 300 --rounds 3 [--before build/before/src]

Each round runs every variant in turn, on the same engine: ``before`` (the worker of the
source tree ``--before`` names, e.g. ``git archive a74488b src | tar -x -C build/before``),
``off`` (this tree, no ``OTEL_*``) and ``on`` (this tree, exporting over OTLP/HTTP to a sink
in another process that discards what it gets). A variant's worker (``camunda-relay worker
bench.tracing_worker``, a reply topic whose handler returns at once) is started and idle
before the instances are started; its CPU (utime + stime from /proc, threads included, the
exporter's too) is read when it is ready and again when every instance has finished and
the exporter has had a second to send its last batch. The figure is CPU seconds per job,
the median of the rounds; the ratios are of those medians. Every instance carries a
``traceparent`` variable, as one started inside a web application's trace would.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.procstat import cpu_seconds
from camunda_relay.bundled_engine import ensure_built
from camunda_relay.testing.engine import PASSWORD, USER, Engine, free_port, start_engine

PROCESS_KEY = "correlation-message"
ROOT = Path(__file__).resolve().parents[1]
SINK = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


@contextmanager
def sink() -> Iterator[str]:
    """An OTLP/HTTP endpoint in another process that takes every export and keeps nothing."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(f"http://127.0.0.1:{port}/v1/traces", content=b"")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


def worker_env(
    engine: Engine, variant: str, endpoint: str, before: Path | None, state: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMUNDA_", "OTEL_"))}
    env.update(
        CAMUNDA_URL=engine.rest_url,
        CAMUNDA_USER=USER,
        CAMUNDA_PASSWORD=PASSWORD,
        CAMUNDA_JOURNAL=str(state / f"journal-{uuid.uuid4().hex[:6]}.sqlite3"),
        CAMUNDA_LONG_POLL="5",
        CAMUNDA_HTTP_PORT=str(free_port()),
        CAMUNDA_RECONCILE="off",
    )
    paths = [str(ROOT)]
    if variant == "before":
        assert before is not None
        paths.insert(0, str(before))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if variant == "on":
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_SERVICE_NAME="bench-worker",
            OTEL_BSP_SCHEDULE_DELAY="500",
        )
    return env


def finished_count(rest: httpx.Client) -> int:
    params = {"processDefinitionKey": PROCESS_KEY, "finished": "true"}
    return int(rest.get("/history/process-instance/count", params=params).json()["count"])


def one_round(
    engine: Engine,
    rest: httpx.Client,
    variant: str,
    args: argparse.Namespace,
    endpoint: str,
    state: Path,
) -> float:
    """CPU seconds per job of one worker process of ``variant``."""
    env = worker_env(engine, variant, endpoint, args.before, state)
    command = [sys.executable, "-m", "camunda_relay.cli", "worker", "bench.tracing_worker"]
    worker = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        ready = f"http://127.0.0.1:{env['CAMUNDA_HTTP_PORT']}/readyz"
        wait_until(lambda: _answers(ready), 60, "the worker's readiness")
        time.sleep(1.0)  # past its start: imports, the journal, the first poll
        cpu_before = cpu_seconds(worker.pid)
        base = finished_count(rest)
        traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
        body = {"variables": {"traceparent": {"value": traceparent, "type": "String"}}}
        for _ in range(args.instances):
            rest.post(f"/process-definition/key/{PROCESS_KEY}/start", json=body).raise_for_status()
        wait_until(lambda: finished_count(rest) >= base + args.instances, 600, "the instances")
        time.sleep(1.0)  # the exporter's last batch (every 0.5 s)
        return (cpu_seconds(worker.pid) - cpu_before) / args.instances
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


def wait_until(check: object, timeout: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, default=None, help="the src/ of the code before")
    args = parser.parse_args(argv)
    variants = ["before", "off", "on"] if args.before else ["off", "on"]
    jar = ensure_built()
    results: dict[str, list[float]] = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory(prefix="tracing-cost-") as folder, sink() as endpoint:
        state = Path(folder)
        engine = start_engine(jar, state / "engine", free_port())
        try:
            with engine.client() as rest:
                for number in range(args.rounds):
                    for variant in variants:
                        cost = one_round(engine, rest, variant, args, endpoint, state)
                        results[variant].append(cost)
                        print(
                            f"round {number + 1} {variant:6s} {cost * 1000:7.3f} ms CPU per job",
                            flush=True,
                        )
        finally:
            engine.stop()
    medians = {variant: statistics.median(costs) for variant, costs in results.items()}
    print(f"{args.instances} reply jobs per variant and round, {args.rounds} rounds; medians:")
    for variant, median in medians.items():
        print(f"  {variant:6s} {median * 1000:7.3f} ms CPU per job")
    print(f"  on / off     = {medians['on'] / medians['off']:.3f}")
    if "before" in medians:
        print(f"  off / before = {medians['off'] / medians['before']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
