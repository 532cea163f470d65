# ruff: noqa: T201 - a command-line tool that prints; timeouts are plain numbers
"""Summarise a py-spy raw (collapsed) profile: where the worker's CPU goes.

    python -m bench.profile /tmp/.../profile-relay-sqlite.txt [--top 25] [--focus camunda_relay]

Prints the share of samples per thread kind, per area (journal, HTTP client, logging, ...),
and the functions with the most samples, self and inclusive (a function counts once per
stack). Line numbers are dropped so that one function is one row.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")

# First match wins, checked from the leaf of the stack upwards.
AREAS = [
    ("journal (SQLite)", ("journal/sqlite.py", "sqlite3")),
    ("journal (PostgreSQL)", ("journal/postgres.py", "psycopg")),
    ("journal codec (JSON)", ("journal/codec.py",)),
    ("logging", ("logging/",)),
    ("HTTP client (httpx/httpcore/h11)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("HTTP client (aiohttp)", ("aiohttp/", "yarl/", "multidict/", "aiohappyeyeballs/")),
    ("ssl/socket", ("ssl.py", "socket.py", "selectors.py")),
    ("variables/json", ("variables.py", "json/")),
    ("asyncio machinery", ("asyncio/",)),
    ("camunda_relay (own code)", ("camunda_relay/",)),
    ("threading/executor", ("threading.py", "concurrent/")),
]


def frames(stack: str) -> list[tuple[str, str]]:
    found = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw.strip())
        if match:
            found.append((match["func"], match["file"]))
        else:
            found.append((raw.strip(), ""))
    return found


def area_of(stack: list[tuple[str, str]]) -> str:
    for func, file in reversed(stack):
        for name, needles in AREAS:
            if any(n in file or n in func for n in needles):
                return name
    return "other"


def summarise(path: Path, top: int, focus: str | None) -> str:
    total = 0
    threads: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = frames(stack_text)
        total += count
        names = [f"{func} ({file})" for func, file in stack]
        thread = "event loop" if any("run_forever" in n for n in names) else "other threads"
        if any("journal" in n for n in names) and thread == "other threads":
            thread = "journal thread"
        threads[thread] += count
        areas[area_of(stack)] += count
        self_time[names[-1]] += count
        for name in set(names):
            if focus is None or focus in name:
                inclusive[name] += count
    out = [f"{path}: {total} samples"]
    out.append("\nby thread:")
    out += [f"  {n / total:6.1%}  {name}" for name, n in threads.most_common()]
    out.append("\nby area (leaf-most match):")
    out += [f"  {n / total:6.1%}  {name}" for name, n in areas.most_common()]
    out.append(f"\nself (top {top}):")
    out += [f"  {n / total:6.1%}  {name}" for name, n in self_time.most_common(top)]
    out.append(f"\ninclusive (top {top}{', ' + focus if focus else ''}):")
    out += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--focus", default=None, help="inclusive: only names containing this")
    args = parser.parse_args()
    print(summarise(args.profile, args.top, args.focus))


if __name__ == "__main__":
    main()
