"""S27's own tools on their own: the hosts-style name service of a worker process, and the
count of tasks locked at once as the proxies see it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from harness import hosts
from harness.cluster import peak_locked


def _real(host: Any, port: Any, *args: Any) -> list[Any]:
    return [("real", host, port)]


def test_a_hosts_file_answers_its_names_and_follows_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.2 nodes.test  # node a\n127.0.0.3 nodes.test other.test\n")
    resolve = hosts.resolving_from(path, _real)
    found = resolve("NODES.test", 8080, type=socket.SOCK_STREAM)
    assert [entry[4] for entry in found] == [("127.0.0.2", 8080), ("127.0.0.3", 8080)]
    assert resolve("elsewhere.test", 80) == [("real", "elsewhere.test", 80)]
    path.write_text("127.0.0.3 nodes.test\n")
    assert [entry[4] for entry in resolve(b"nodes.test", "8080")] == [("127.0.0.3", 8080)]


def _op(name: str, end: float, tasks: int | None = None, result: str = "ok") -> dict[str, Any]:
    return {"op": f"POST /external-task/{name}", "end_t": end, "tasks": tasks, "result": result}


def test_the_peak_counts_fetched_tasks_until_their_completion_or_unlock() -> None:
    ops = [
        _op("fetchAndLock", 1.0, tasks=3),
        _op("fetchAndLock", 2.0, tasks=3),
        _op("{id}/complete", 3.0),
        _op("fetchAndLock", 3.0, tasks=1),  # at the same moment: the release counts first
        _op("{id}/unlock", 4.0),
        _op("fetchAndLock", 5.0, tasks=2),
        _op("fetchAndLock", 6.0, tasks=5, result="fail"),  # an error answer locks nothing
        _op("{id}/extendLock", 6.5),  # not a release
    ]
    assert peak_locked(ops) == 7


def test_the_peak_of_no_operations_is_zero() -> None:
    assert peak_locked([]) == 0
