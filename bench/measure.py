"""The figures of a phase: quantiles, latencies from the engine's history, and CPU seconds of
every process taking part (``Meter``)."""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from bench import loadgen, procstat


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
    """CPU seconds of engine, worker, database, this process and the whole machine.
    ``worker_pid`` may be several processes (pods): "worker" is their sum, and
    "worker_main_thread" the first one's event-loop thread."""

    engine_pid: int
    worker_pid: int | list[int]
    db_pid: int | None
    start: dict[str, float] = field(default_factory=dict)

    def sample(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        pids = self.worker_pid if isinstance(self.worker_pid, list) else [self.worker_pid]
        return {
            "engine": procstat.cpu_seconds(self.engine_pid),
            "worker": sum(procstat.cpu_seconds(pid) for pid in pids),
            "worker_main_thread": procstat.thread_cpu_seconds(pids[0], pids[0]),
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
