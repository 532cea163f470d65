"""The results as Markdown tables (the block between the markers in docs/benchmarks.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench import goals


def markers(db: str, writer: str = "python -m bench.run") -> tuple[str, str]:
    """The results block ``db`` in docs/benchmarks.md (each run rewrites only its own) and the
    command that writes it."""
    return (
        f"<!-- bench-results:{db}:begin (written by {writer}) -->",
        f"<!-- bench-results:{db}:end -->",
    )


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"  # noqa: RUF001


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"  # noqa: RUF001


def _q(q: dict[str, float | None]) -> str:
    return " / ".join(_ms(q.get(k)) for k in ("p50", "p95", "p99"))


def markdown(results: dict[str, Any]) -> str:
    run = results["run"]
    m = run["machine"]
    v = run["versions"]
    opts = run["options"]
    out = [
        f"Run {run['started']}, {run.get('seconds', 0) / 60:.1f} min: `{run['command']}` "
        f"(via `make bench`).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mb'] / 1024:.0f} GiB, Linux "
        f"{m['kernel']}; load average (1/5/15 min) {_load(m['load_average'])} at the start, "
        f"{_load(run.get('load_average_end'))} at the end. Database: "
        f"{'PostgreSQL' if opts['db'] == 'postgres' else 'H2 (file mode)'}.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
    ]
    if results["contenders"]:
        out += _contender_tables(results, opts)
    if results.get("pods"):
        out += _pods_table(results["pods"])
    scale = goals.scale_runs(results)
    if scale:
        out += _scale_table(scale)
    if results.get("goals"):
        out += ["", "### Goals (measured, not asserted)", "", "| goal | measured | met |",
                "|---|---|---|"]  # fmt: skip
        for goal in results["goals"]:
            out.append(f"| {goal['goal']} | {goal['measured']} | {_met(goal['met'])} |")
    return "\n".join(out) + "\n"


def _per_instance(cpu: float, finished: int) -> str:
    return f" ({1000 * cpu / finished:.1f} ms/inst)" if finished else ""


def _contender_tables(results: dict[str, Any], opts: dict[str, Any]) -> list[str]:
    out = [
        "",
        f"### Saturation: {opts['instances']:,} instances per contender",
        "",
        "Instances started as fast as "
        f"{opts['start_lanes']} connections go while the worker runs; latencies in ms "
        "(p50 / p95 / p99); CPU in seconds from the first start to the last end; "
        '"others" is CPU used on the machine by processes outside the benchmark in that '
        "time.",
        "",
        "| contender | finished | inst/s | vs ideal | vs conception | end-to-end | "
        "task created → handler | worker CPU | worker peak RSS | engine CPU | "
        + ("database CPU | " if opts["db"] == "postgres" else "")
        + "others CPU | load before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        + ("---:|" if opts["db"] == "postgres" else "")
        + "---:|---:|",
    ]
    for c in results["contenders"]:
        s = c["saturation"]
        cpu = c.get("cpu_seconds", {})
        out.append(
            f"| {c['label']} | {s['finished']:,}/{s['started']:,} | {s['throughput']:.1f} | "
            f"{_x(c.get('vs_ideal'))} | {_x(c.get('vs_conception'))} | "
            f"{_q(s['end_to_end_ms'])} | {_q(s['pickup_ms'])} | "
            f"{cpu.get('worker', 0):.1f} s{_per_instance(cpu.get('worker', 0), s['finished'])} | "
            f"{c.get('worker_peak_rss_mb', 0):.0f} MB | "
            f"{cpu.get('engine', 0):.1f} s{_per_instance(cpu.get('engine', 0), s['finished'])} | "
            + (f"{cpu.get('database', 0):.1f} s | " if opts["db"] == "postgres" else "")
            + f"{cpu.get('others', 0):.1f} s | {c['load_average_before'][0]:.1f} |"
        )
    out += [
        "",
        f"### Light load: {opts['probe_instances']} instances at {opts['probe_rate']:g} per second",
        "",
        "| contender | finished | end-to-end p50 / p95 / p99 | task created → handler "
        "p50 / p95 / p99 |",
        "|---|---:|---:|---:|",
    ]
    for c in results["contenders"]:
        lt = c["light"]
        out.append(
            f"| {c['label']} | {lt['finished']}/{lt['started']} | {_q(lt['end_to_end_ms'])} | "
            f"{_q(lt['pickup_ms'])} |"
        )
    return out


def _scale_table(runs: list[dict[str, Any]]) -> list[str]:
    jobs = ", ".join(f"{n:,}" for n in sorted({r["jobs"] for r in runs}))
    out = [
        "",
        f"### Scale: {jobs} reply jobs pending in one worker, then released at once",
        "",
        "The instances are started over 8 connections while the worker takes them on; "
        '"taken on" is the handler\'s start (camunda-relay: recorded in the journal and the '
        "task completed) or, for the ideal driver, its complete call's answer.",
        "",
        "| figure | "
        + " | ".join(f"{r.get('label', 'camunda-relay')} ({r['jobs']:,})" for r in runs)
        + " |",
        "|---|" + "---:|" * len(runs),
    ]
    rows: list[tuple[str, Any]] = [
        ("jobs pending at once", lambda r: f"{r.get('pending', 0):,}"),
        ("time to start and take on all of them",
         lambda r: f"{r.get('take_seconds')} s ({r.get('take_per_second')}/s; starts took "
                   f"{r.get('start_seconds')} s)"),
        ("worker / engine CPU while taking them on",
         lambda r: f"{_cpu(r, 'take_cpu_seconds', 'worker')} / "
                   f"{_cpu(r, 'take_cpu_seconds', 'engine')}"),
        ("RSS before the first job", lambda r: f"{r.get('rss_mb_before')} MB"),
        ("RSS with all jobs pending", lambda r: f"{r.get('rss_mb_pending')} MB"),
        ("peak RSS (whole run, drain included)", lambda r: f"{r.get('peak_rss_mb')} MB"),
        ("worker CPU while idle",
         lambda r: f"{_cpu(r, 'idle_cpu_seconds', 'worker')} in {r['idle_window_seconds']:g} s "
                   f"= {r.get('idle_cpu_percent_of_one_core')}% of one core"),
        ("engine CPU in that window", lambda r: _cpu(r, "idle_cpu_seconds", "engine")),
        ("time to drain after the release", _drain),
        ("finished", lambda r: f"{r.get('finished', 0):,}"),
        ("worker / engine CPU during the drain",
         lambda r: f"{_cpu(r, 'drain_cpu_seconds', 'worker')} / "
                   f"{_cpu(r, 'drain_cpu_seconds', 'engine')}"),
    ]  # fmt: skip
    for label, cell in rows:
        out.append(f"| {label} | " + " | ".join(cell(r) for r in runs) + " |")
    return out


def _cpu(run: dict[str, Any], phase: str, key: str) -> str:
    value = (run.get(phase) or {}).get(key)
    return "–" if value is None else f"{value:.1f} s"  # noqa: RUF001


def _drain(run: dict[str, Any]) -> str:
    if run.get("drained", True):
        return f"{run.get('drain_seconds')} s ({run.get('drain_per_second')} instances/s)"
    return (
        f"**did not drain**: {run.get('finished', 0):,} of {run['jobs']:,} finished, "
        "then none for 120 s"
    )


def _pods_table(pods: list[dict[str, Any]]) -> list[str]:
    out = [
        "",
        "### Several pods: camunda-relay worker processes on one PostgreSQL journal",
        "",
        "The saturation run above with "
        + ", ".join(str(c["pods"]) for c in pods)
        + " processes of the same worker (own worker ids, one journal database), against one "
        "engine. Worker CPU is the sum of the processes'.",
        "",
        "| processes | finished | inst/s | vs ideal | worker CPU | database CPU | engine CPU | "
        "task created → handler (sat.) | light-load pickup p50 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in pods:
        s = c["saturation"]
        cpu = c.get("cpu_seconds", {})
        out.append(
            f"| {c['pods']} | {s['finished']:,}/{s['started']:,} | {s['throughput']:.1f} | "
            f"{_x(c.get('vs_ideal'))} | "
            f"{cpu.get('worker', 0):.1f} s{_per_instance(cpu.get('worker', 0), s['finished'])} | "
            f"{cpu.get('database', 0):.1f} s | "
            f"{cpu.get('engine', 0):.1f} s{_per_instance(cpu.get('engine', 0), s['finished'])} | "
            f"{_q(s['pickup_ms'])} | {_ms(c['light']['pickup_ms']['p50'])} |"
        )
    return out


def _load(value: Any) -> str:
    if not value:
        return "?"
    return " / ".join(f"{x:.2f}" for x in value)


def write_markdown(path: Path, table: str, db: str, writer: str = "python -m bench.run") -> None:
    BEGIN, END = markers(db, writer)
    block = f"{BEGIN}\n\n{table}\n{END}"
    if path.exists():
        text = path.read_text()
        found = re.search(rf"<!-- bench-results:{re.escape(db)}:begin[^>]*-->", text)
        if found and END in text[found.end() :]:
            _, tail = text[found.end() :].split(END, 1)
            path.write_text(text[: found.start()] + block + tail)
            return
        path.write_text(text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Benchmarks\n\n## Results\n\n" + block + "\n")


SUMMARY_SOURCES = (
    ("H2", "docs/benchmarks.json"),
    ("PostgreSQL", "docs/benchmarks-postgres.json"),
    ("scale", "docs/benchmarks-scale-large.json"),
)


def summary(root: Path) -> str:
    """Every goal of the last runs (the JSON files ``make bench`` writes), in one table."""
    import json

    out = ["| run | goal | measured | met |", "|---|---|---|---|"]
    for run, name in SUMMARY_SOURCES:
        path = root / name
        if not path.exists():
            out.append(f"| {run} | (not run: {name} is missing) | – | – |")  # noqa: RUF001
            continue
        results = json.loads(path.read_text())
        goals.add_ratios_and_goals(results)
        stamp = f"{results['run']['started'][:16]}, {results['run']['versions']['git_commit']}"
        for goal in results["goals"]:
            out.append(f"| {run} ({stamp}) | {goal['goal']} | {goal['measured']} | "
                       f"{_met(goal['met'])} |")  # fmt: skip
    return "\n".join(out) + "\n"


def _met(met: bool | str) -> str:
    return met if isinstance(met, str) else ("met" if met else "not met")


def main() -> None:
    """``python -m bench.report RESULTS.json [MARKDOWN]``: render a results file again;
    ``python -m bench.report --summary [MARKDOWN]``: the goals of every run in one table."""
    import json
    import sys

    if sys.argv[1:2] == ["--summary"]:
        target = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/benchmarks.md")
        write_markdown(target, summary(Path.cwd()), "goals", "python -m bench.report --summary")
        sys.stdout.write(summary(Path.cwd()))
        return
    source = Path(sys.argv[1])
    results = json.loads(source.read_text())
    goals.add_ratios_and_goals(results)
    source.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    if len(sys.argv) > 2:
        write_markdown(Path(sys.argv[2]), table, results["run"]["options"]["db"])
    else:
        sys.stdout.write(table)


if __name__ == "__main__":
    main()
