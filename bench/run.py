# ruff: noqa: T201 - a command-line tool that prints
"""``python -m bench.run``: throughput, latency and scale of the seed process's workers.

Every contender runs against a freshly started bundled engine (its own H2 data directory, or
its own PostgreSQL database with ``--db postgres``) on this machine, one after the other
(bench/saturation.py):

1. the worker process starts; a warm-up batch (not measured) runs through;
2. light load: ``--probe-instances`` instances started at ``--probe-rate`` per second;
3. saturation: ``--instances`` instances started as fast as ``--start-lanes`` connections go,
   while the worker runs; CPU of engine and worker measured from the first start until the
   last instance finished.

With ``--db postgres``, then the same saturation with ``--pods`` camunda-relay processes on
one PostgreSQL journal. Then the scale run (bench/scale.py): the ideal driver and one
camunda-relay worker each take ``--scale-jobs`` reply jobs whose replies wait, are measured
while idle, released, and timed until every instance finished.

Results: a JSON file and a results block of docs/benchmarks.md (see ``--json``,
``--markdown``, ``--block``); the goals table compares camunda-relay with the ideal driver of
the same run (bench/goals.py). See docs/benchmarks.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import goals, procstat, report
from bench.processes import ROOT, Contender, Database, Options, say, start_database
from bench.saturation import run_contender
from bench.scale import run_scale
from camunda_relay import __version__ as relay_version
from camunda_relay import bundled_engine


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
        "aiohttp": _version("aiohttp"),
    }
    if db is not None:
        found["postgresql"] = subprocess.run(
            [str(db.server.bin_dir / "postgres"), "--version"], capture_output=True, text=True,
            check=False,
        ).stdout.strip()  # fmt: skip
    return found


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
    parser.add_argument(
        "--scale-kinds", default="ideal,relay",
        help="the scale run's workers: ideal (the engine's own limit), relay",
    )  # fmt: skip
    parser.add_argument(
        "--pods", default="1,2,3",
        help="with --db postgres: saturation with this many camunda-relay processes on one "
        "PostgreSQL journal, each (comma-separated; 'none' to leave out)",
    )  # fmt: skip
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
    parser.add_argument("--json", default=None, help="default: docs/benchmarks[-BLOCK].json")
    parser.add_argument("--markdown", default="docs/benchmarks.md")
    parser.add_argument(
        "--block", default=None, help="the results block of --markdown to rewrite (default: --db)"
    )
    parser.add_argument("--no-docs", action="store_true", help="write neither file")
    parser.add_argument("--work-dir", default=None, help="default: a new temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    args.block = args.block or args.db
    if args.profile and not (
        shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists()
    ):
        parser.error("--profile needs py-spy on PATH or beside this Python (pip install py-spy)")
    if args.json is None:
        args.json = (
            "docs/benchmarks.json" if args.block == "h2" else f"docs/benchmarks-{args.block}.json"
        )
    pods = () if args.db != "postgres" or args.pods == "none" else _counts(parser, args.pods)
    kinds = tuple(kind.strip() for kind in args.scale_kinds.split(",") if kind.strip())
    if not set(kinds) <= {"ideal", "relay"}:
        parser.error(f"--scale-kinds: ideal and/or relay, got {args.scale_kinds!r}")
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
        pods=pods,
        scale_kinds=kinds,
    )
    return args, opts


def _counts(parser: argparse.ArgumentParser, text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        parser.error(f"--pods: comma-separated numbers, got {text!r}")
    if any(count < 1 for count in counts):
        parser.error(f"--pods: each at least 1, got {text!r}")
    return counts


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # through every finally: engines and workers are stopped


def main(argv: list[str] | None = None) -> None:
    args, opts = parse(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
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
        "pods": [],
        "scale": [],
    }
    try:
        for contender in chosen:
            results["contenders"].append(run_contender(contender, jar, opts, db))
        for count in opts.pods:
            pods = Contender(
                f"relay-pods-{count}",
                f"camunda-relay, {count} worker process{'es' if count > 1 else ''}, "
                "one PostgreSQL journal",
                "relay",
                "postgres",
            )
            results["pods"].append(run_contender(pods, jar, opts, db, pods=count))
        if not args.no_scale and opts.scale_jobs > 0:
            for kind in opts.scale_kinds:
                results["scale"].append(run_scale(jar, opts, db, kind))
    finally:
        if db is not None:
            with contextlib.suppress(Exception):
                db.server.stop()
            shutil.rmtree(db.base, ignore_errors=True)
        if not args.keep and not opts.profile:
            shutil.rmtree(opts.work_dir, ignore_errors=True)
    results["run"]["seconds"] = round(time.time() - began, 1)
    results["run"]["load_average_end"] = procstat.loadavg()
    goals.add_ratios_and_goals(results)
    table = report.markdown(results)
    print(table)
    if not args.no_docs:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        report.write_markdown(Path(args.markdown), table, args.block)
        say(f"results: {args.json}, {args.markdown}")
    if opts.profile:
        say(f"profiles kept in {opts.work_dir}: python -m bench.profile FILE")


if __name__ == "__main__":
    main()
