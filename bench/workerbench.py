# ruff: noqa: T201 - a command-line tool that prints
"""A worker's own cost per task, against :mod:`bench.stub_engine` instead of the engine.

The stub answers at once, so the figures are the worker's: CPU seconds per task (all its
threads, from /proc), wall time and tasks per second for ``--tasks`` reply tasks, for each
variant given. Variants: ``relay`` (camunda-relay as installed), ``relay+PATCHES`` (the same
with bench.relay_worker_tuned's patches, e.g. ``relay+sniffio,limit:32``), ``ideal``.

    python -m bench.workerbench --tasks 5000 relay relay+sniffio relay+limit:32 ideal
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.tools import free_port

from bench import procstat

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run_variant(variant: str, tasks: int, work: Path, profile: bool) -> dict[str, object]:
    port = free_port()
    stub = subprocess.Popen(
        [PY, "-m", "bench.stub_engine", "--port", str(port), "--tasks", str(tasks)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert stub.stdout is not None
    json.loads(stub.stdout.readline())  # listening
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")}
    env.update(
        CAMUNDA_URL=f"http://127.0.0.1:{port}/engine-rest",
        CAMUNDA_USER="bench",
        CAMUNDA_PASSWORD="bench",  # noqa: S106 - the stub checks nothing
        CAMUNDA_JOURNAL=str(work / f"journal-{time.time_ns()}.sqlite3"),
        CAMUNDA_STATE_DIR=str(work / "state"),
    )
    name, _, patches = variant.partition("+")
    if name == "ideal":
        command = [PY, "-m", "bench.ideal_driver"]
    else:
        module = "bench.relay_worker"
        if patches:
            module = "bench.relay_worker_tuned"
            env["BENCH_PATCHES"] = patches
            if "sniffio" in patches.split(","):
                from bench.run import SNIFFIO

                target = work / "sniffio-site"
                if not (target / "sniffio").exists():
                    subprocess.run(
                        [PY, "-m", "pip", "install", "-q", "--no-deps", "--target",
                         str(target), SNIFFIO],
                        check=True,
                    )  # fmt: skip
                env["PYTHONPATH"] = str(target)
        command = [PY, "-m", "camunda_relay.cli", "worker", module, "--log-level", "INFO"]
    log = (work / f"{variant.replace('/', '_')}.log").open("wb")
    worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    spy = None
    try:
        time.sleep(3.0)
        if profile:
            spy = subprocess.Popen(
                [str(Path(PY).parent / "py-spy"), "record", "--pid", str(worker.pid), "--rate",
                 "200", "--format", "raw", "--output", str(work / f"profile-{variant}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)
        cpu0 = procstat.cpu_seconds(worker.pid)
        main0 = procstat.thread_cpu_seconds(worker.pid, worker.pid)
        stub_cpu0 = procstat.cpu_seconds(stub.pid)
        began = time.time()
        stub.send_signal(signal.SIGUSR1)
        done = json.loads(stub.stdout.readline())
        wall = done["last_message"] - began
        cpu = procstat.cpu_seconds(worker.pid) - cpu0
        main = procstat.thread_cpu_seconds(worker.pid, worker.pid) - main0
        rss = procstat.peak_rss_mb(worker.pid)
        stub_cpu = procstat.cpu_seconds(stub.pid) - stub_cpu0
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=40)
        except subprocess.TimeoutExpired:
            worker.kill()
        stub.terminate()
        stub.wait()
    return {
        "variant": variant,
        "tasks": tasks,
        "wall_s": round(wall, 2),
        "tasks_per_s": round(tasks / wall, 1),
        "worker_cpu_ms_per_task": round(1000 * cpu / tasks, 3),
        "event_loop_thread_ms_per_task": round(1000 * main / tasks, 3),
        "other_threads_ms_per_task": round(1000 * (cpu - main) / tasks, 3),
        "peak_rss_mb": round(rss, 1),
        "stub_cpu_ms_per_task": round(1000 * stub_cpu / tasks, 3),
        "tasks_per_fetch": round(tasks / done["fetches"], 1) if done.get("fetches") else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="workerbench-"))
    rows = []
    try:
        for _ in range(args.repeat):
            for variant in args.variants:
                row = run_variant(variant, args.tasks, work, args.profile)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if not args.profile:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"profiles in {work}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
