# ruff: noqa: T201 - a command-line tool that prints
"""The benchmark's processes: a fresh bundled engine per contender (H2 or its own PostgreSQL
database), the worker processes (ideal driver, camunda-relay, the conception's worker), and
py-spy on a worker."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import engine as engine_support
from tests.support.tools import free_port, postgres_bin_dir

from bench.rawhttp import Endpoint
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
    hold: bool = False  # ideal: complete at once, correlate only on SIGUSR1 (the scale run)


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
    pods: tuple[int, ...] = ()  # several relay workers on one PostgreSQL journal (--db postgres)
    scale_kinds: tuple[str, ...] = ("ideal", "relay")  # the scale run's workers, in order


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


def progress(prefix: str, total: int, every: float = 10.0) -> Callable[[int], None]:
    """A ``progress`` callback for loadgen.wait_finished: a line at most every ``every`` s."""
    last = [0.0]

    def report(done: int) -> None:
        if time.monotonic() - last[0] > every:
            last[0] = time.monotonic()
            say(f"  {prefix}: {done}/{total} finished")

    return report


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
    journal: str | None = None,
    pod: int | None = None,
) -> Worker:
    """Start a contender's worker. ``journal``: a PostgreSQL journal URL several pods share
    (see :func:`postgres_journal`); ``pod`` numbers them (their own folders and worker ids)."""
    suffix = "" if pod is None else f"-pod{pod}"
    run_dir = opts.work_dir / f"worker-{slug(contender.name)}{suffix}"
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
        ] + (["--hold"] if contender.hold else [])
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
        if pod is not None:
            env["CAMUNDA_WORKER_ID"] = f"bench{suffix}"
        if journal is not None:
            env["CAMUNDA_JOURNAL"] = journal
        elif contender.journal == "postgres":
            assert db is not None
            env["CAMUNDA_JOURNAL"] = postgres_journal(db, contender.name)
        else:
            env["CAMUNDA_JOURNAL"] = str(run_dir / "journal.sqlite3")
    env.update(extra_env or {})
    log = run_dir / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    return Worker(process=process, marks=run_dir / "marks.txt", log=log)


def postgres_journal(db: Database, name: str) -> str:
    """A fresh journal database on the benchmark's PostgreSQL server, as CAMUNDA_JOURNAL."""
    from tests.support.postgres import PASSWORD, USER

    database = db.fresh(f"journal_{slug(name)}_{int(time.time())}")
    return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{db.server.port}/{database}"


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


def endpoint_of(running: Running) -> Endpoint:
    return Endpoint(running.engine.rest_url, engine_support.USER, engine_support.PASSWORD)


def start_database(opts: Options) -> Database:
    from tests.support.postgres import init_server

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise SystemExit("--db postgres needs PostgreSQL (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    server = init_server(bin_dir, base, free_port())
    say(f"PostgreSQL ready on port {server.port}")
    return Database(server=server, base=base)
