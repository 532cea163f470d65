# ruff: noqa: ASYNC109 - a command-line tool that prints; timeouts are plain numbers
"""A contender's run: warm-up, light load, saturation (``run_contender``), and the same
saturation with several camunda-relay worker processes on one journal (``run_pods``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench import loadgen, marks, procstat
from bench.measure import Meter, phase_figures
from bench.processes import (
    Contender,
    Database,
    Options,
    Profiler,
    Worker,
    endpoint_of,
    launch_worker,
    postgres_journal,
    progress,
    say,
    slug,
    start_engine,
    stop_engine,
    stop_worker,
)
from bench.rawhttp import Connection, Endpoint


class Pods:
    """The worker processes of one contender: one, or several on one journal."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers]

    def alive(self) -> bool:
        return all(worker.alive() for worker in self.workers)

    def marks(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for worker in self.workers:
            for instance, at in marks.read(str(worker.marks)).items():
                found[instance] = min(at, found.get(instance, at))
        return found

    def stop(self) -> None:
        for worker in self.workers:
            stop_worker(worker)


async def _phase(
    endpoint: Endpoint,
    prefix: str,
    count: int,
    *,
    lanes: int,
    rate: float | None,
    workers: Pods,
    stall: float,
    timeout: float,
) -> tuple[loadgen.Started, int]:
    conn = Connection(endpoint)
    starting = asyncio.ensure_future(
        loadgen.start_instances(endpoint, loadgen.keys(prefix, count), lanes=lanes, rate=rate)
    )
    finished, _ = await loadgen.wait_finished(
        conn,
        prefix,
        count,
        starting=starting,
        alive=workers.alive,
        stall=stall,
        timeout=timeout,
        progress=progress(prefix, count),
    )
    started = await starting
    conn.close()
    return started, finished


async def _history(endpoint: Endpoint, prefixes: list[str]) -> tuple[dict[str, Any], Any]:
    conn = Connection(endpoint)
    rows = {prefix: await loadgen.instances(conn, prefix) for prefix in prefixes}
    created = await loadgen.task_created(conn)
    conn.close()
    return rows, created


def history(endpoint: Endpoint, prefixes: list[str]) -> tuple[dict[str, Any], Any]:
    """The historic instances of each business-key prefix, and when each task was created."""
    return asyncio.run(_history(endpoint, prefixes))


def _launch(
    contender: Contender, running: Any, opts: Options, db: Database | None, pods: int | None
) -> Pods:
    if pods is None:
        return Pods([launch_worker(contender, running, opts, db)])
    assert db is not None, "several pods share a PostgreSQL journal: --db postgres"
    journal = postgres_journal(db, contender.name)
    return Pods(
        [launch_worker(contender, running, opts, db, journal=journal, pod=n) for n in range(pods)]
    )


def run_contender(
    contender: Contender, jar: Path, opts: Options, db: Database | None, *, pods: int | None = None
) -> dict[str, Any]:
    """Warm-up, light load and saturation of one contender on a fresh engine; ``pods``: that
    many camunda-relay processes on one PostgreSQL journal."""
    say(f"== {contender.label}")
    load_before = procstat.loadavg()
    running = start_engine(jar, opts, db, contender.name)
    endpoint = endpoint_of(running)
    workers = _launch(contender, running, opts, db, pods)
    result: dict[str, Any] = {
        "name": contender.name,
        "label": contender.label,
        "kind": contender.kind,
        "pods": pods or 1,
        "load_average_before": load_before,
    }
    profiler = None
    try:
        time.sleep(1.0)
        timeout = max(600.0, opts.instances * 0.5)
        say(f"  warm-up: {opts.warmup} instances")
        asyncio.run(
            _phase(endpoint, "warm", opts.warmup, lanes=2, rate=None, workers=workers,
                   stall=opts.stall, timeout=timeout)
        )  # fmt: skip
        say(f"  light load: {opts.probe_instances} instances at {opts.probe_rate:g}/s")
        probe_started, _ = asyncio.run(
            _phase(endpoint, "probe", opts.probe_instances, lanes=opts.start_lanes,
                   rate=opts.probe_rate, workers=workers, stall=opts.stall, timeout=timeout)
        )  # fmt: skip
        say(f"  saturation: {opts.instances} instances, {opts.start_lanes} start lanes")
        meter = Meter(running.engine.info.pid, workers.pids, db.pid() if db else None)
        if opts.profile and contender.kind == "relay" and pods is None:
            profiler = Profiler(
                workers.pids[0], opts.work_dir / f"profile-{slug(contender.name)}.txt"
            )
        meter.begin()
        sat_started, finished = asyncio.run(
            _phase(endpoint, "sat", opts.instances, lanes=opts.start_lanes, rate=None,
                   workers=workers, stall=opts.stall, timeout=timeout)
        )  # fmt: skip
        cpu = meter.end()
        if profiler is not None:
            profiler.stop()
            profiler = None
        result["worker_alive"] = workers.alive()
        result["worker_peak_rss_mb"] = round(
            max(procstat.peak_rss_mb(pid) for pid in workers.pids), 1
        )
        result["cpu_seconds"] = cpu
        say(f"  {finished}/{opts.instances} finished; CPU {cpu}")
    finally:
        if profiler is not None:
            profiler.stop()
        workers.stop()
    try:
        rows, created = history(endpoint, ["probe", "sat"])
        handler_marks = workers.marks()
        result["light"] = phase_figures(rows["probe"], created, handler_marks, probe_started)
        result["saturation"] = phase_figures(rows["sat"], created, handler_marks, sat_started)
    finally:
        stop_engine(running)
    sat = result["saturation"]
    say(
        f"  -> {sat['throughput']} inst/s, e2e p50 {sat['end_to_end_ms']['p50']} ms, "
        f"pickup p50 {sat['pickup_ms']['p50']} ms (light: {result['light']['pickup_ms']['p50']})"
    )
    return result
