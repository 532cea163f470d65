"""The goals of docs/benchmarks.md, each a ratio to the ideal driver of the same run (or a
limit), met or not met with the measured reason. Figures only: nothing here is asserted."""

from __future__ import annotations

from typing import Any

OTHERS_LIMIT = 0.2  # share of the machine's CPU used by other work that makes a ratio unreliable
RSS_LIMIT_MB = 1024  # 100,000 pending reply jobs in one worker
IDLE_LIMIT_PERCENT = 2.0


def _by_name(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in results["contenders"]}


def others_share(contender: dict[str, Any], cores: int) -> float:
    cpu = contender.get("cpu_seconds") or {}
    wall = cpu.get("wall") or 0
    return (cpu.get("others") or 0) / (wall * cores) if wall else 0.0


def per_instance_ms(contender: dict[str, Any], key: str = "worker") -> float | None:
    finished = contender.get("saturation", {}).get("finished") or 0
    cpu = (contender.get("cpu_seconds") or {}).get(key)
    return 1000 * cpu / finished if finished and cpu is not None else None


def _goal(goal: str, measured: str, met: bool | str, busy: float = 0.0) -> dict[str, Any]:
    if busy > OTHERS_LIMIT and met is not True:
        measured += f" (other work used up to {busy:.0%} of the machine meanwhile)"
        met = "unreliable"
    return {"goal": goal, "measured": measured, "met": met}


def add_ratios_and_goals(results: dict[str, Any]) -> None:
    """Ratios on every contender (``vs_ideal``, ``vs_conception``) and ``results["goals"]``."""
    named = _by_name(results)
    cores = results["run"]["machine"].get("cores") or 1
    ideal = named.get("ideal")
    conception = named.get("conception", {}).get("saturation", {}).get("throughput")
    base = ideal["saturation"]["throughput"] if ideal else None
    for contender in [*results["contenders"], *results.get("pods", [])]:
        rate = contender["saturation"]["throughput"]
        contender["vs_ideal"] = round(rate / base, 2) if base else None
        contender["vs_conception"] = round(rate / conception, 2) if conception else None
    goals: list[dict[str, Any]] = []
    for name in ("relay-sqlite", "relay-postgres"):
        if name in named and ideal is not None:
            goals += _relay_goals(named[name], ideal, cores, results["run"]["options"]["db"])
    goals += _scale_goals(scale_runs(results), cores)
    results["goals"] = goals


def _relay_goals(
    relay: dict[str, Any], ideal: dict[str, Any], cores: int, db: str
) -> list[dict[str, Any]]:
    name = relay["name"]
    busy = max(others_share(relay, cores), others_share(ideal, cores))
    found = []
    mine, theirs = per_instance_ms(relay), per_instance_ms(ideal)
    if mine is not None and theirs:
        measured = f"{mine:.1f} vs {theirs:.1f} ms per instance = {mine / theirs:.1f}x"
        if db == "postgres":
            own_db, ideal_db = (
                per_instance_ms(relay, "database"),
                per_instance_ms(ideal, "database"),
            )
            if own_db is not None and ideal_db is not None:
                measured += f"; database CPU beside it {own_db:.1f} vs {ideal_db:.1f} ms"
        found.append(
            _goal(f"{name}: worker CPU per reply job <= 2x the ideal driver's", measured,
                  mine <= 2 * theirs, busy)
        )  # fmt: skip
    if relay.get("vs_ideal") is not None:
        found.append(
            _goal(f"{name}: throughput >= 0.95x the ideal driver",
                  f"{relay['vs_ideal']:.2f}x ({relay['saturation']['throughput']:.1f} vs "
                  f"{ideal['saturation']['throughput']:.1f} instances/s)",
                  relay["vs_ideal"] >= 0.95, busy)
        )  # fmt: skip
    light, ideal_light = relay["light"]["pickup_ms"]["p50"], ideal["light"]["pickup_ms"]["p50"]
    if light is not None and ideal_light:
        found.append(
            _goal(f"{name}: light load, task created -> handler p50 <= 2x the ideal's",
                  f"{light:.0f} vs {ideal_light:.0f} ms = {light / ideal_light:.1f}x",
                  light <= 2 * ideal_light)
        )  # fmt: skip
    return found


def scale_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    scale = results.get("scale") or []
    if isinstance(scale, dict):  # results files written before the ideal driver's scale run
        scale = [{"kind": "relay", **scale}]
    return scale


def _phase_share(run: dict[str, Any], phase: str, cores: int) -> float:
    return others_share({"cpu_seconds": run.get(phase)}, cores)


def _scale_goals(runs: list[dict[str, Any]], cores: int) -> list[dict[str, Any]]:
    ideal = next((r for r in runs if r.get("kind") == "ideal"), None)
    found = []
    for relay in (r for r in runs if r.get("kind", "relay") == "relay"):
        jobs = relay["jobs"]
        if ideal is not None and ideal["jobs"] == jobs:
            found += _against_ideal(relay, ideal, cores)
        if relay.get("rss_mb_pending") is not None:
            found.append(
                _goal(f"{jobs:,} pending reply jobs in one worker: resident memory < 1 GB",
                      f"{relay['rss_mb_pending']:.0f} MB while pending "
                      f"({relay.get('peak_rss_mb') or 0:.0f} MB peak, drain included)",
                      relay["rss_mb_pending"] < RSS_LIMIT_MB)
            )  # fmt: skip
            found.append(
                _goal(f"{jobs:,} pending reply jobs: < 2% of one core while idle",
                      f"{relay['idle_cpu_percent_of_one_core']:.2f}%",
                      relay["idle_cpu_percent_of_one_core"] < IDLE_LIMIT_PERCENT)
            )  # fmt: skip
    return found


def _against_ideal(
    relay: dict[str, Any], ideal: dict[str, Any], cores: int
) -> list[dict[str, Any]]:
    jobs = relay["jobs"]
    drain_busy = max(_phase_share(r, "drain_cpu_seconds", cores) for r in (relay, ideal))
    take_busy = max(_phase_share(r, "take_cpu_seconds", cores) for r in (relay, ideal))
    found = []
    mine, theirs = relay.get("drain_per_second"), ideal.get("drain_per_second")
    if mine and theirs:
        found.append(
            _goal(f"draining {jobs:,} due replies >= 0.9x the engine's limit (ideal driver "
                  "correlating alone)",
                  f"{mine:.1f} vs {theirs:.1f} instances/s = {mine / theirs:.2f}x",
                  mine >= 0.9 * theirs, drain_busy)
        )  # fmt: skip
    mine, theirs = relay.get("take_seconds"), ideal.get("take_seconds")
    if mine and theirs:
        found.append(
            _goal(f"taking on {jobs:,} jobs at least as fast as the engine hands them out "
                  "(the ideal driver, same starts)",
                  f"{mine:.1f} vs {theirs:.1f} s (starts took {relay.get('start_seconds')} vs "
                  f"{ideal.get('start_seconds')} s)",
                  mine <= theirs, take_busy)
        )  # fmt: skip
    return found
