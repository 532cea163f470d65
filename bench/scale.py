# ruff: noqa: ASYNC109 - a command-line tool that prints; timeouts are plain numbers
"""The scale run: one worker takes ``--scale-jobs`` reply jobs whose work waits, is measured
while idle, released, and timed until every instance finished."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from bench import loadgen, marks, procstat
from bench.measure import Meter
from bench.processes import (
    Contender,
    Database,
    Options,
    Profiler,
    Worker,
    endpoint_of,
    launch_worker,
    progress,
    say,
    start_engine,
    stop_engine,
    stop_worker,
)
from bench.rawhttp import Connection, Endpoint
from camunda_relay.settings import Settings


async def _scale_take(
    endpoint: Endpoint, jobs: int, worker: Worker, lanes: int, timeout: float
) -> loadgen.Started:
    starting = asyncio.ensure_future(
        loadgen.start_instances(endpoint, loadgen.keys("scale", jobs), lanes=lanes)
    )
    began = time.monotonic()
    last = 0.0
    while worker.alive() and time.monotonic() - began < timeout:
        taken = marks.count(str(worker.marks))
        if time.monotonic() - last > 10:
            last = time.monotonic()
            say(f"  scale: {taken}/{jobs} jobs pending in the worker")
        if taken >= jobs and starting.done():
            break
        await asyncio.sleep(1.0)
    return await starting


async def _scale_drain(endpoint: Endpoint, jobs: int, worker: Worker, timeout: float) -> int:
    conn = Connection(endpoint)
    finished, _ = await loadgen.wait_finished(
        conn,
        "scale",
        jobs,
        starting=None,
        alive=worker.alive,
        stall=120,
        timeout=timeout,
        progress=progress("scale", jobs),
    )
    conn.close()
    return finished


async def _drain_end(endpoint: Endpoint) -> tuple[int, float | None]:
    """How many scale instances finished, and when the last one ended."""
    conn = Connection(endpoint)
    try:
        return await loadgen.finished_count(conn, "scale"), await loadgen.last_end(conn, "scale")
    finally:
        conn.close()


def idle_seconds(kind: str, opts: Options) -> float:
    """The idle window: for camunda-relay at least one reconciler interval (the default, 5
    min), so that the figure holds the one sweep a user pays for in every such interval (a
    60 s window held it or not, by chance: 0.03 % or 4.18 % of a core)."""
    if kind == "ideal":
        return opts.scale_idle
    return max(opts.scale_idle, Settings().reconcile_interval.total_seconds())


def scale_contender(kind: str, opts: Options) -> Contender:
    if kind == "ideal":
        return Contender(
            "ideal-scale", "ideal driver: completes at once, correlates on release", "ideal",
            hold=True,
        )  # fmt: skip
    return Contender(
        "relay-scale", "camunda-relay, reply jobs whose work waits", "relay", journal="sqlite",
        patches=opts.scale_patches,
    )  # fmt: skip


def _launch(contender: Contender, running: Any, opts: Options, jobs: int) -> Worker:
    if contender.kind == "ideal":
        return launch_worker(contender, running, opts, None)
    extra = {"CAMUNDA_REPLY_DEADLINE": "7200", "BENCH_HOLD_SECONDS": "3600"}
    if jobs > 10_000:  # the default CAMUNDA_MAX_PENDING_REPLIES
        extra["CAMUNDA_MAX_PENDING_REPLIES"] = str(jobs)
    return launch_worker(
        contender, running, opts, None, module="bench.scale_worker", extra_env=extra
    )


def run_scale(
    jar: Path, opts: Options, db: Database | None, kind: str = "relay", jobs: int | None = None
) -> dict[str, Any]:
    """``jobs`` instances taken on by one worker (``kind`` relay or ideal) whose replies wait;
    the worker measured while idle, then released and the drain timed."""
    jobs = jobs or opts.scale_jobs
    contender = scale_contender(kind, opts)
    say(f"== scale run: {jobs:,} pending reply jobs, {contender.label}")
    running = start_engine(jar, opts, db, f"{contender.name}-{jobs}")
    endpoint = endpoint_of(running)
    worker = _launch(contender, running, opts, jobs)
    idle_window = idle_seconds(kind, opts)
    result: dict[str, Any] = {
        "kind": kind,
        "label": contender.label,
        "jobs": jobs,
        "idle_window_seconds": idle_window,
    }
    profiler = None
    try:
        time.sleep(3.0)
        result["rss_mb_before"] = round(procstat.rss_mb(worker.pid), 1)
        began = time.time()
        meter = Meter(running.engine.info.pid, worker.pid, db.pid() if db else None)
        meter.begin()
        started = asyncio.run(_scale_take(endpoint, jobs, worker, 8, timeout=max(900, jobs)))
        result["take_cpu_seconds"] = meter.end()
        taken = marks.count(str(worker.marks))
        result["started"] = len(started.ids)
        result["pending"] = taken
        result["take_seconds"] = round(time.time() - began, 1)
        result["start_seconds"] = round(started.last - started.first, 1)
        result["take_per_second"] = round(taken / max(time.time() - began, 1e-9), 1)
        say(f"  {taken} jobs pending after {result['take_seconds']} s; settling")
        time.sleep(5.0)
        if opts.profile and kind == "relay":
            profiler = Profiler(worker.pid, opts.work_dir / f"profile-relay-idle-{jobs}.txt")
        meter.begin()
        time.sleep(idle_window)
        idle = meter.end()
        if profiler is not None:
            profiler.stop()
            profiler = None
        result["idle_cpu_seconds"] = idle
        result["idle_cpu_percent_of_one_core"] = round(100 * idle["worker"] / idle["wall"], 2)
        result["rss_mb_pending"] = round(procstat.rss_mb(worker.pid), 1)
        say(
            f"  idle: worker {result['idle_cpu_percent_of_one_core']}% of a core, "
            f"RSS {result['rss_mb_pending']} MB"
        )
        if opts.profile and kind == "relay":
            profiler = Profiler(worker.pid, opts.work_dir / f"profile-relay-drain-{jobs}.txt")
        meter.begin()
        released = time.time()
        worker.process.send_signal(signal.SIGUSR1)
        finished = asyncio.run(_scale_drain(endpoint, jobs, worker, timeout=max(1800, jobs / 20)))
        result["drain_cpu_seconds"] = meter.end()
        if profiler is not None:
            profiler.stop()
            profiler = None
        result["finished"] = finished
        result["drained"] = finished >= jobs
        result["peak_rss_mb"] = round(procstat.peak_rss_mb(worker.pid), 1)
    finally:
        if profiler is not None:
            profiler.stop()
        stop_worker(worker)
    try:
        ended, last = asyncio.run(_drain_end(endpoint))
        result["drain_seconds"] = round(last - released, 2) if last is not None else None
        if last is not None:
            result["drain_per_second"] = round(ended / max(last - released, 1e-9), 1)
    finally:
        stop_engine(running)
    say(f"  drained {result.get('finished')} in {result.get('drain_seconds')} s")
    return result
