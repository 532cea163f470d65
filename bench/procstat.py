"""CPU time and memory of processes, from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()  # fields from 3 (state) on


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of the process (all its threads); with ``children``, plus the CPU of
    its reaped children (cutime + cstime), as for a PostgreSQL postmaster's backends."""
    try:
        fields = _stat_fields(pid)
    except (OSError, IndexError):
        return 0.0
    # fields[0] is field 3; utime=14, stime=15, cutime=16, cstime=17
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """CPU of one thread of the process (the main thread's id is the process id)."""
    try:
        text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        fields = text.rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(_stat_fields(int(entry.name))[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def tree_cpu_seconds(pid: int) -> float:
    """A server and its live children plus reaped ones (PostgreSQL: postmaster + backends)."""
    return cpu_seconds(pid, children=True) + sum(cpu_seconds(c) for c in children_of(pid))


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def system_busy_seconds() -> float:
    """CPU seconds the whole machine was busy (all cores), since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / _TICK


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)
