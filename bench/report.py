"""The results as Markdown tables (the block between the markers in docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def markers(db: str) -> tuple[str, str]:
    """The results block of one database's run (``make bench`` and ``make bench DB=postgres``
    each rewrite only their own)."""
    return (
        f"<!-- bench-results:{db}:begin (written by python -m bench.run) -->",
        f"<!-- bench-results:{db}:end -->",
    )


def _by_name(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in results["contenders"]}


OTHERS_LIMIT = 0.2  # share of the machine's CPU used by other work that makes a ratio unreliable


def others_share(contender: dict[str, Any], cores: int) -> float:
    cpu = contender.get("cpu_seconds") or {}
    wall = cpu.get("wall") or 0
    return (cpu.get("others") or 0) / (wall * cores) if wall else 0.0


def add_ratios_and_goals(results: dict[str, Any]) -> None:
    named = _by_name(results)
    cores = results["run"]["machine"].get("cores") or 1
    ideal = named.get("ideal", {}).get("saturation", {}).get("throughput")
    conception = named.get("conception", {}).get("saturation", {}).get("throughput")
    for contender in results["contenders"]:
        rate = contender["saturation"]["throughput"]
        contender["vs_ideal"] = round(rate / ideal, 2) if ideal else None
        contender["vs_conception"] = round(rate / conception, 2) if conception else None
    goals = []
    for name in ("relay-sqlite", "relay-postgres"):
        relay = named.get(name)
        if relay is None:
            continue
        if relay["vs_ideal"] is not None:
            busy = max(others_share(relay, cores), others_share(named["ideal"], cores))
            measured = f"{relay['vs_ideal']:.2f}x"
            met: bool | str = relay["vs_ideal"] >= 0.9
            if busy > OTHERS_LIMIT:
                measured += f" (other work used up to {busy:.0%} of the machine meanwhile)"
                met = "unreliable"
            goals.append(
                {
                    "goal": f"{name}: throughput >= 0.9x the ideal driver",
                    "measured": measured,
                    "met": met,
                }
            )
        light = relay["light"]["pickup_ms"]["p50"]
        sat = relay["saturation"]["pickup_ms"]["p50"]
        if light is not None:
            goals.append(
                {
                    "goal": f"{name}: p50 task creation -> handler start < 50 ms (light load)",
                    "measured": f"{light:.0f} ms (under saturation: {_ms(sat)})",
                    "met": light < 50,
                }
            )
    scale = results.get("scale")
    if scale and scale.get("rss_mb_pending") is not None:
        peak = scale.get("peak_rss_mb") or scale["rss_mb_pending"]
        goals.append(
            {
                "goal": f"{scale['jobs']:,} pending reply jobs in < 300 MB RSS",
                "measured": f"{scale['rss_mb_pending']:.0f} MB while pending "
                f"({peak:.0f} MB peak incl. drain)",
                "met": scale["rss_mb_pending"] < 300,
            }
        )
        goals.append(
            {
                "goal": f"{scale['jobs']:,} pending reply jobs: < 2% of one core while idle",
                "measured": f"{scale['idle_cpu_percent_of_one_core']:.2f}%",
                "met": scale["idle_cpu_percent_of_one_core"] < 2,
            }
        )
    results["goals"] = goals


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
    scale = results.get("scale")
    if scale:
        out += _scale_table(scale)
    if results.get("goals"):
        out += ["", "### Goals (measured, not asserted)", "", "| goal | measured | met |",
                "|---|---|---|"]  # fmt: skip
        for goal in results["goals"]:
            met = goal["met"] if isinstance(goal["met"], str) else ("yes" if goal["met"] else "no")
            out.append(f"| {goal['goal']} | {goal['measured']} | {met} |")
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


def _scale_table(scale: dict[str, Any]) -> list[str]:
    if True:
        idle = scale.get("idle_cpu_seconds", {})
        drain = scale.get("drain_cpu_seconds", {})
        out = [
            "",
            f"### Scale: one camunda-relay worker holding {scale['jobs']:,} reply jobs",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| jobs pending at once | {scale.get('pending', 0):,} |",
            f"| time to start and take on all of them | {scale.get('take_seconds')} s |",
            f"| RSS before the first job | {scale.get('rss_mb_before')} MB |",
            f"| RSS with all jobs pending | {scale.get('rss_mb_pending')} MB |",
            f"| peak RSS (whole run, drain included) | {scale.get('peak_rss_mb')} MB |",
            f"| worker CPU while idle ({scale['idle_window_seconds']:g} s window) | "
            f"{idle.get('worker', 0):.2f} s = {scale.get('idle_cpu_percent_of_one_core')}% of "
            "one core |",
            f"| engine CPU in that window | {idle.get('engine', 0):.2f} s |",
            _drain_row(scale),
            f"| finished | {scale.get('finished', 0):,} |",
            f"| worker / engine CPU during the drain | {drain.get('worker', 0):.1f} s / "
            f"{drain.get('engine', 0):.1f} s |",
        ]
    return out


def _drain_row(scale: dict[str, Any]) -> str:
    if scale.get("drained", True):
        return (
            f"| time to drain after the work finished | {scale.get('drain_seconds')} s "
            f"({scale.get('drain_per_second')} instances/s) |"
        )
    return (
        f"| time to drain after the work finished | **did not drain**: "
        f"{scale.get('finished', 0):,} of {scale['jobs']:,} finished, then none for 120 s |"
    )


def _load(value: Any) -> str:
    if not value:
        return "?"
    return " / ".join(f"{x:.2f}" for x in value)


def write_markdown(path: Path, table: str, db: str) -> None:
    BEGIN, END = markers(db)
    block = f"{BEGIN}\n\n{table}\n{END}"
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            path.write_text(head + block + tail)
            return
        path.write_text(text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Benchmarks\n\n## Results\n\n" + block + "\n")


def main() -> None:
    """``python -m bench.report RESULTS.json [MARKDOWN]``: render a results file again."""
    import json
    import sys

    source = Path(sys.argv[1])
    results = json.loads(source.read_text())
    add_ratios_and_goals(results)
    source.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    if len(sys.argv) > 2:
        write_markdown(Path(sys.argv[2]), table, results["run"]["options"]["db"])
    else:
        sys.stdout.write(table)


if __name__ == "__main__":
    main()
