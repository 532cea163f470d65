# ruff: noqa: T201, ASYNC109 - a command-line tool that prints; timeouts are plain numbers
"""``python -m bench.run``: throughput, latency and scale of the seed process's workers.

Every contender runs against a freshly started bundled engine (its own H2 data directory, or
its own PostgreSQL database with ``--db postgres``) on this machine, one after the other:

1. the worker process starts; a warm-up batch (not measured) runs through;
2. light load: ``--probe-instances`` instances started at ``--probe-rate`` per second;
3. saturation: ``--instances`` instances started as fast as ``--start-lanes`` connections go,
   while the worker runs; CPU of engine and worker measured from the first start until the
   last instance finished.

Then the scale run: one camunda-relay worker takes ``--scale-jobs`` reply jobs whose work
waits, is measured while idle, released, and timed until every instance finished.

Results: a JSON file and the results block of docs/benchmarks.md (see ``--json``,
``--markdown``). See docs/benchmarks.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import engine as engine_support
from tests.support.tools import free_port, postgres_bin_dir

from bench import loadgen, marks, procstat, report
from bench.rawhttp import Connection, Endpoint
from camunda_relay import __version__ as relay_version
from camunda_relay import bundled_engine

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass
class Contender:
    name: str
    label: str
    kind: str  # conception | relay | ideal
    journal: str | None = None  # relay: sqlite | postgres
    sleep: float | None = None  # conception: seconds
    patches: str = ""  # relay: candidate fixes applied from outside (bench.relay_worker_tuned)


@dataclass
class Options:
    instances: int
    db: str
    probe_instances: int
    probe_rate: float
    warmup: int
    start_lanes: int
    ideal_lanes: int
    ideal_max_tasks: int
    relay_max_in_flight: int | None
    scale_jobs: int
    scale_idle: float
    stall: float
    profile: bool
    work_dir: Path
    experiment: str = ""
    scale_patches: str = ""


@dataclass
class Database:
    """The PostgreSQL server for ``--db postgres`` (engine databases and relay journals)."""

    server: Any
    base: Path

    def fresh(self, name: str) -> str:
        self.server.create_database(name)
        return name

    def pid(self) -> int:
        return int((self.server.data_dir / "postmaster.pid").read_text().split()[0])


@dataclass
class Running:
    engine: engine_support.Engine
    database: str | None
    state_dir: Path


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    marks: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- engine and worker processes ------------------------------------------------------------


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def start_engine(jar: Path, opts: Options, db: Database | None, name: str) -> Running:
    state_dir = opts.work_dir / f"engine-{slug(name)}"
    if state_dir.exists():
        shutil.rmtree(state_dir)
    postgres = None
    database = None
    if db is not None:
        database = db.fresh(f"engine_{slug(name)}")
        from tests.support.postgres import PASSWORD, USER

        postgres = bundled_engine.Postgres(db.server.jdbc_url(database), USER, PASSWORD)
    began = time.monotonic()
    engine = engine_support.start_engine(jar, state_dir, free_port(), postgres)
    say(f"engine ready in {time.monotonic() - began:.0f} s (pid {engine.info.pid})")
    return Running(engine=engine, database=database, state_dir=state_dir)


def stop_engine(running: Running) -> None:
    bundled_engine.stop(running.engine.info.pid)
    shutil.rmtree(running.state_dir, ignore_errors=True)


def _env(rest_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")}
    env.update(
        CAMUNDA_URL=rest_url,
        CAMUNDA_USER=engine_support.USER,
        CAMUNDA_PASSWORD=engine_support.PASSWORD,
        PYTHONUNBUFFERED="1",
    )
    return env


def launch_worker(
    contender: Contender,
    running: Running,
    opts: Options,
    db: Database | None,
    *,
    module: str = "bench.relay_worker",
    extra_env: dict[str, str] | None = None,
) -> Worker:
    run_dir = opts.work_dir / f"worker-{slug(contender.name)}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    env = _env(running.engine.rest_url)
    env["BENCH_MARKS"] = str(run_dir / "marks.txt")
    if contender.kind == "conception":
        command = [PY, "-m", "bench.conception_worker"]
        env["CONCEPTION_SLEEP_SECONDS"] = str(contender.sleep)
    elif contender.kind == "ideal":
        command = [
            PY,
            "-m",
            "bench.ideal_driver",
            "--lanes",
            str(opts.ideal_lanes),
            "--max-tasks",
            str(opts.ideal_max_tasks),
        ]
    else:
        if contender.patches:
            env["BENCH_PATCHES"] = contender.patches
            env["BENCH_ROUTER"] = "scale" if module == "bench.scale_worker" else "relay"
            module = "bench.relay_worker_tuned"
            if "sniffio" in contender.patches.split(","):
                env["PYTHONPATH"] = str(sniffio_dir(opts))
        command = [PY, "-m", "camunda_relay.cli", "worker", module]
        if opts.relay_max_in_flight:
            command += ["--max-in-flight", str(opts.relay_max_in_flight)]
        env["CAMUNDA_STATE_DIR"] = str(run_dir / "state")
        if contender.journal == "postgres":
            assert db is not None
            from tests.support.postgres import PASSWORD, USER

            name = db.fresh(f"journal_{slug(contender.name)}_{int(time.time())}")
            env["CAMUNDA_JOURNAL"] = (
                f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{db.server.port}/{name}"
            )
        else:
            env["CAMUNDA_JOURNAL"] = str(run_dir / "journal.sqlite3")
    env.update(extra_env or {})
    log = run_dir / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    return Worker(process=process, marks=run_dir / "marks.txt", log=log)


SNIFFIO = "sniffio==1.3.1"


def sniffio_dir(opts: Options) -> Path:
    """A folder holding only the real sniffio package, for PYTHONPATH (experiments: the
    baseline .venv stays as camunda-relay's requirements make it)."""
    target = opts.work_dir / "sniffio-site"
    if not (target / "sniffio").exists():
        subprocess.run(
            [PY, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), SNIFFIO],
            check=True,
        )
    return target


def stop_worker(worker: Worker) -> None:
    if worker.alive():
        worker.process.send_signal(signal.SIGTERM)
        try:
            worker.process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


class Profiler:
    """py-spy sampling the worker (``--profile``); raw collapsed stacks for bench.profile."""

    def __init__(self, pid: int, output: Path) -> None:
        self.output = output
        spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
        self.process = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
             "--nonblocking", "--output", str(output)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        say(f"profile written: {self.output}")


# -- measurements --------------------------------------------------------------------------


def quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)
    if len(ordered) == 1:
        return {"p50": ordered[0], "p95": ordered[0], "p99": ordered[0], "max": ordered[0]}
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50": round(cuts[49], 1),
        "p95": round(cuts[94], 1),
        "p99": round(cuts[98], 1),
        "max": round(ordered[-1], 1),
    }


def phase_figures(
    history: list[dict[str, Any]],
    created: dict[str, float],
    handler_marks: dict[str, float],
    started: loadgen.Started,
) -> dict[str, Any]:
    done = [row for row in history if row.get("endTime")]
    e2e = [float(row["durationInMillis"]) for row in done]
    pickup = [
        (handler_marks[row["id"]] - created[row["id"]]) * 1000
        for row in history
        if row["id"] in handler_marks and row["id"] in created
    ]
    figures: dict[str, Any] = {
        "started": len(started.ids),
        "start_errors": started.errors,
        "finished": len(done),
        "start_seconds": round(started.last - started.first, 2),
        "starts_per_second": round(len(started.ids) / max(started.last - started.first, 1e-9), 1),
        "end_to_end_ms": quantiles(e2e),
        "pickup_ms": quantiles(pickup),
        "pickup_count": len(pickup),
    }
    if done:
        first = min(loadgen.epoch(row["startTime"]) for row in history)
        last = max(loadgen.epoch(row["endTime"]) for row in done)
        figures["wall_seconds"] = round(last - first, 2)
        figures["throughput"] = round(len(done) / max(last - first, 1e-9), 1)
    else:
        figures["wall_seconds"] = None
        figures["throughput"] = 0.0
    return figures


@dataclass
class Meter:
    """CPU seconds of engine, worker, database, this process and the whole machine."""

    engine_pid: int
    worker_pid: int
    db_pid: int | None
    start: dict[str, float] = field(default_factory=dict)

    def sample(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "engine": procstat.cpu_seconds(self.engine_pid),
            "worker": procstat.cpu_seconds(self.worker_pid),
            "worker_main_thread": procstat.thread_cpu_seconds(self.worker_pid, self.worker_pid),
            "database": procstat.tree_cpu_seconds(self.db_pid) if self.db_pid else 0.0,
            "load_generator": own.ru_utime + own.ru_stime,
            "machine": procstat.system_busy_seconds(),
            "time": time.monotonic(),
        }

    def begin(self) -> None:
        self.start = self.sample()

    def end(self) -> dict[str, float]:
        now = self.sample()
        spent = {key: round(now[key] - self.start[key], 2) for key in now}
        spent["wall"] = spent.pop("time")
        spent["others"] = round(
            spent["machine"]
            - spent["engine"]
            - spent["worker"]
            - spent["database"]
            - spent["load_generator"],
            2,
        )
        return spent


async def _phase(
    endpoint: Endpoint,
    prefix: str,
    count: int,
    *,
    lanes: int,
    rate: float | None,
    worker: Worker,
    stall: float,
    timeout: float,
) -> tuple[loadgen.Started, int]:
    conn = Connection(endpoint)
    starting = asyncio.ensure_future(
        loadgen.start_instances(endpoint, loadgen.keys(prefix, count), lanes=lanes, rate=rate)
    )
    last_print = [0.0]

    def progress(done: int) -> None:
        if time.monotonic() - last_print[0] > 10:
            last_print[0] = time.monotonic()
            say(f"  {prefix}: {done}/{count} finished")

    finished, _ = await loadgen.wait_finished(
        conn,
        prefix,
        count,
        starting=starting,
        alive=worker.alive,
        stall=stall,
        timeout=timeout,
        progress=progress,
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


def endpoint_of(running: Running) -> Endpoint:
    return Endpoint(running.engine.rest_url, engine_support.USER, engine_support.PASSWORD)


def run_contender(contender: Contender, jar: Path, opts: Options, db: Database | None) -> dict:
    say(f"== {contender.label}")
    load_before = procstat.loadavg()
    running = start_engine(jar, opts, db, contender.name)
    endpoint = endpoint_of(running)
    worker = launch_worker(contender, running, opts, db)
    result: dict[str, Any] = {
        "name": contender.name,
        "label": contender.label,
        "kind": contender.kind,
        "load_average_before": load_before,
    }
    profiler = None
    try:
        time.sleep(1.0)
        timeout = max(600.0, opts.instances * 0.5)
        say(f"  warm-up: {opts.warmup} instances")
        asyncio.run(
            _phase(endpoint, "warm", opts.warmup, lanes=2, rate=None, worker=worker,
                   stall=opts.stall, timeout=timeout)
        )  # fmt: skip
        say(f"  light load: {opts.probe_instances} instances at {opts.probe_rate:g}/s")
        probe_started, _ = asyncio.run(
            _phase(endpoint, "probe", opts.probe_instances, lanes=opts.start_lanes,
                   rate=opts.probe_rate, worker=worker, stall=opts.stall, timeout=timeout)
        )  # fmt: skip
        say(f"  saturation: {opts.instances} instances, {opts.start_lanes} start lanes")
        meter = Meter(running.engine.info.pid, worker.pid, db.pid() if db else None)
        if opts.profile and contender.kind == "relay":
            profiler = Profiler(worker.pid, opts.work_dir / f"profile-{slug(contender.name)}.txt")
        meter.begin()
        sat_started, finished = asyncio.run(
            _phase(endpoint, "sat", opts.instances, lanes=opts.start_lanes, rate=None,
                   worker=worker, stall=opts.stall, timeout=timeout)
        )  # fmt: skip
        cpu = meter.end()
        if profiler is not None:
            profiler.stop()
            profiler = None
        result["worker_alive"] = worker.alive()
        result["worker_peak_rss_mb"] = round(procstat.peak_rss_mb(worker.pid), 1)
        result["cpu_seconds"] = cpu
        say(f"  {finished}/{opts.instances} finished; CPU {cpu}")
    finally:
        if profiler is not None:
            profiler.stop()
        stop_worker(worker)
    try:
        rows, created = asyncio.run(_history(endpoint, ["probe", "sat"]))
        handler_marks = marks.read(str(worker.marks))
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


# -- the scale run ---------------------------------------------------------------------------


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
    last_print = [0.0]

    def progress(done: int) -> None:
        if time.monotonic() - last_print[0] > 10:
            last_print[0] = time.monotonic()
            say(f"  scale: {done}/{jobs} finished")

    finished, _ = await loadgen.wait_finished(
        conn,
        "scale",
        jobs,
        starting=None,
        alive=worker.alive,
        stall=120,
        timeout=timeout,
        progress=progress,
    )
    conn.close()
    return finished


def run_scale(jar: Path, opts: Options, db: Database | None) -> dict[str, Any]:
    contender = Contender(
        "relay-scale", "camunda-relay scale run", "relay", journal="sqlite",
        patches=opts.scale_patches,
    )  # fmt: skip
    say(f"== scale run: {opts.scale_jobs} pending reply jobs in one worker")
    running = start_engine(jar, opts, db, contender.name)
    endpoint = endpoint_of(running)
    worker = launch_worker(
        contender,
        running,
        opts,
        None,
        module="bench.scale_worker",
        extra_env={"CAMUNDA_REPLY_DEADLINE": "7200", "BENCH_HOLD_SECONDS": "3600"},
    )
    result: dict[str, Any] = {"jobs": opts.scale_jobs, "idle_window_seconds": opts.scale_idle}
    profiler = None
    try:
        time.sleep(3.0)
        result["rss_mb_before"] = round(procstat.rss_mb(worker.pid), 1)
        began = time.time()
        started = asyncio.run(
            _scale_take(endpoint, opts.scale_jobs, worker, 8, timeout=max(900, opts.scale_jobs))
        )
        taken = marks.count(str(worker.marks))
        result["started"] = len(started.ids)
        result["pending"] = taken
        result["take_seconds"] = round(time.time() - began, 1)
        say(f"  {taken} jobs pending after {result['take_seconds']} s; settling")
        time.sleep(5.0)
        meter = Meter(running.engine.info.pid, worker.pid, None)
        if opts.profile:
            profiler = Profiler(worker.pid, opts.work_dir / "profile-relay-idle.txt")
        meter.begin()
        time.sleep(opts.scale_idle)
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
        if opts.profile:
            profiler = Profiler(worker.pid, opts.work_dir / "profile-relay-drain.txt")
        meter.begin()
        released = time.time()
        worker.process.send_signal(signal.SIGUSR1)
        finished = asyncio.run(_scale_drain(endpoint, opts.scale_jobs, worker, timeout=1800))
        result["drain_cpu_seconds"] = meter.end()
        if profiler is not None:
            profiler.stop()
            profiler = None
        result["finished"] = finished
        result["drained"] = finished >= opts.scale_jobs
        result["peak_rss_mb"] = round(procstat.peak_rss_mb(worker.pid), 1)
    finally:
        if profiler is not None:
            profiler.stop()
        stop_worker(worker)
    try:
        rows, _ = asyncio.run(_history(endpoint, ["scale"]))
        ends = [loadgen.epoch(r["endTime"]) for r in rows["scale"] if r.get("endTime")]
        result["drain_seconds"] = round(max(ends) - released, 2) if ends else None
        if ends:
            result["drain_per_second"] = round(len(ends) / max(max(ends) - released, 1e-9), 1)
    finally:
        stop_engine(running)
    say(f"  drained {result.get('finished')} in {result.get('drain_seconds')} s")
    return result


# -- the run -------------------------------------------------------------------------------------


def contenders(db: str, experiment: str = "") -> list[Contender]:
    found = [
        Contender("ideal", "ideal driver (raw REST, batched, no handler)", "ideal"),
        Contender("relay-sqlite", "camunda-relay, reply mode, SQLite journal", "relay", "sqlite"),
    ]
    if db == "postgres":
        found.append(
            Contender(
                "relay-postgres",
                "camunda-relay, reply mode, PostgreSQL journal",
                "relay",
                "postgres",
            )
        )
    for patches in (p.strip() for p in experiment.split(";")):
        if patches:
            found.append(
                Contender(
                    f"relay-tuned[{patches}]",
                    f"camunda-relay, SQLite journal, patched: {patches}",
                    "relay",
                    "sqlite",
                    patches=patches,
                )
            )
    found += [
        Contender("conception", "conception's worker as written (sleep 2 s)", "conception",
                  sleep=2.0),
        Contender("conception-nosleep", "conception's worker without the sleep", "conception",
                  sleep=0.0),
    ]  # fmt: skip
    return found


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) // 1024
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_mb": memory,
        "kernel": platform.release(),
        "load_average": procstat.loadavg(),
    }


def versions(db: Database | None) -> dict[str, Any]:
    java = subprocess.run(
        [bundled_engine._java(), "-version"], capture_output=True, text=True, check=False
    ).stderr.splitlines()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
        check=False,
    ).stdout.strip()  # fmt: skip
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src", "engine"], cwd=ROOT, capture_output=True,
        text=True, check=False,
    ).stdout.strip()  # fmt: skip
    found = {
        "python": platform.python_version(),
        "java": java[0] if java else None,
        "camunda": "7.24.0 (bundled engine, Spring Boot 3.5)",
        "camunda_relay": relay_version,
        "git_commit": commit + (" (src/ or engine/ modified)" if dirty else ""),
        "camunda-external-task-client-python3": _version("camunda-external-task-client-python3"),
        "requests": _version("requests"),
        "pydantic": _version("pydantic"),
        "httpx": _version("httpx"),
    }
    if db is not None:
        found["postgresql"] = subprocess.run(
            [str(db.server.bin_dir / "postgres"), "--version"], capture_output=True, text=True,
            check=False,
        ).stdout.strip()  # fmt: skip
    return found


def start_database(opts: Options) -> Database:
    from tests.support.postgres import init_server

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise SystemExit("--db postgres needs PostgreSQL (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    server = init_server(bin_dir, base, free_port())
    say(f"PostgreSQL ready on port {server.port}")
    return Database(server=server, base=base)


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Options]:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1000, help="per contender (saturation)")
    parser.add_argument("--db", choices=["h2", "postgres"], default="h2")
    parser.add_argument("--probe-instances", type=int, default=100)
    parser.add_argument("--probe-rate", type=float, default=10.0, help="light load, per second")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--start-lanes", type=int, default=4)
    parser.add_argument("--ideal-lanes", type=int, default=8)
    parser.add_argument("--ideal-max-tasks", type=int, default=100)
    parser.add_argument("--relay-max-in-flight", type=int, default=None)
    parser.add_argument("--scale-jobs", type=int, default=10_000)
    parser.add_argument("--scale-idle", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument("--no-scale", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated contender names")
    parser.add_argument(
        "--experiment",
        default="",
        help="adds a relay contender per ';'-separated patch set (bench.relay_worker_tuned), "
        "e.g. 'sniffio;limit:32;sniffio,limit:32,sync:NORMAL'; --only names them "
        "relay-tuned[PATCHES]",
    )
    parser.add_argument("--scale-patches", default="", help="patches for the scale run's worker")
    parser.add_argument("--stall", type=float, default=8.0)
    parser.add_argument("--profile", action="store_true", help="py-spy the relay worker")
    parser.add_argument("--json", default=None, help="default: docs/benchmarks[-postgres].json")
    parser.add_argument("--markdown", default="docs/benchmarks.md")
    parser.add_argument("--no-docs", action="store_true", help="write neither file")
    parser.add_argument("--work-dir", default=None, help="default: a new temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if args.json is None:
        args.json = "docs/benchmarks.json" if args.db == "h2" else "docs/benchmarks-postgres.json"
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="camunda-relay-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    opts = Options(
        instances=args.instances,
        db=args.db,
        probe_instances=args.probe_instances,
        probe_rate=args.probe_rate,
        warmup=args.warmup,
        start_lanes=args.start_lanes,
        ideal_lanes=args.ideal_lanes,
        ideal_max_tasks=args.ideal_max_tasks,
        relay_max_in_flight=args.relay_max_in_flight,
        scale_jobs=args.scale_jobs,
        scale_idle=args.scale_idle,
        stall=args.stall,
        profile=args.profile,
        work_dir=work,
        experiment=args.experiment,
        scale_patches=args.scale_patches,
    )
    return args, opts


def main(argv: list[str] | None = None) -> None:
    args, opts = parse(argv)
    os.chdir(ROOT)
    began = time.time()
    say(f"work folder {opts.work_dir}; load average {procstat.loadavg()}")
    jar = bundled_engine.ensure_built()
    db = start_database(opts) if opts.db == "postgres" else None
    chosen = contenders(opts.db, opts.experiment)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        chosen = [c for c in chosen if c.name in wanted or (c.patches and "relay-tuned" in wanted)]
    results: dict[str, Any] = {
        "run": {
            "command": "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(began)),
            "options": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(opts).items()
                if k != "work_dir"
            },
            "machine": machine(),
            "versions": versions(db),
        },
        "contenders": [],
        "scale": None,
    }
    try:
        for contender in chosen:
            results["contenders"].append(run_contender(contender, jar, opts, db))
        if not args.no_scale and opts.scale_jobs > 0:
            results["scale"] = run_scale(jar, opts, db)
    finally:
        if db is not None:
            with contextlib.suppress(Exception):
                db.server.stop()
            shutil.rmtree(db.base, ignore_errors=True)
        if not args.keep and not opts.profile:
            shutil.rmtree(opts.work_dir, ignore_errors=True)
    results["run"]["seconds"] = round(time.time() - began, 1)
    results["run"]["load_average_end"] = procstat.loadavg()
    report.add_ratios_and_goals(results)
    table = report.markdown(results)
    print(table)
    if not args.no_docs:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        report.write_markdown(Path(args.markdown), table, opts.db)
        say(f"results: {args.json}, {args.markdown}")
    if opts.profile:
        say(f"profiles kept in {opts.work_dir}: python -m bench.profile FILE")


if __name__ == "__main__":
    main()
