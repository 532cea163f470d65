# ruff: noqa: T201 - a command-line tool that prints
"""The journal alone: CPU and wall time per reply job of its happy path's writes.

    python -m bench.journal_cost                        # SQLite in a temporary folder
    python -m bench.journal_cost --dsn postgresql://... # PostgreSQL, a table of its own
    python -m bench.journal_cost --jobs 3000 --concurrency 32 --variables 20

Each job is recorded, acknowledged with its first attempt, done with a result and delivered,
as the worker writes them (:mod:`camunda_relay.worker.replies`), ``--concurrency`` jobs at a
time. CPU is the process's (every thread: the journal's own thread too), from
``time.process_time``; the median of three rounds, after a round to warm up. A journal whose
``save`` takes no ``synced`` keeps every write synced (an older camunda-relay).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from camunda_relay.journal import Journal
from camunda_relay.journal.postgres import PostgresJournal
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.job import Job, JobState
from camunda_relay.task import Task


def make_job(number: int, variables: int) -> Job:
    values: dict[str, object] = {
        f"var{n}": f"value {n} of job {number}" * 3 for n in range(variables)
    }
    values["amount"] = number
    task = Task(
        id=f"task-{uuid.uuid4().hex}",
        topic="messageSending",
        worker_id="bench",
        process_instance_id=f"instance-{number}",
        business_key=f"bk-{number}",
        variables=values,
    )
    return Job(task=task, message="sample_response")


async def happy_path(journal: Journal, job: Job, *, lazy: bool) -> None:
    unsynced = {"synced": False} if lazy else {}
    assert await journal.record(job)
    job = job.advance(JobState.ACKNOWLEDGED, attempts=1, token_hash=uuid.uuid4().hex)
    assert await journal.save(job, **unsynced)  # type: ignore[call-arg]
    job = job.advance(JobState.DONE, result={"var1": 1, "var2": "value"}, deadline=time.time() + 60)
    assert await journal.save(job)
    job = job.advance(JobState.DELIVERED, deliveries=1)
    assert await journal.save(job, **unsynced)  # type: ignore[call-arg]


async def one_round(
    journal: Journal, jobs: int, concurrency: int, variables: int
) -> tuple[float, float]:
    lazy = "synced" in inspect.signature(journal.save).parameters
    gate = asyncio.Semaphore(concurrency)

    async def go(number: int) -> None:
        async with gate:
            await happy_path(journal, make_job(number, variables), lazy=lazy)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(go(n) for n in range(jobs)))
    return (time.process_time() - cpu) / jobs * 1000, (time.perf_counter() - wall) / jobs * 1000


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        journal: Journal
        if args.dsn:
            journal = PostgresJournal(
                args.dsn, owner="bench", table=f"bench_{uuid.uuid4().hex[:8]}"
            )
        else:
            journal = SqliteJournal(Path(folder) / "journal.sqlite3", owner="bench")
        try:
            await journal.renew()
            await one_round(journal, max(args.jobs // 5, 1), args.concurrency, args.variables)
            rounds = [
                await one_round(journal, args.jobs, args.concurrency, args.variables)
                for _ in range(3)
            ]
        finally:
            await journal.close()
    cpu = statistics.median(r[0] for r in rounds)
    wall = statistics.median(r[1] for r in rounds)
    print(
        f"{type(journal).__name__}: {args.jobs} jobs x 3 rounds, {args.concurrency} at once, "
        f"{args.variables} variables: CPU {cpu:.3f} ms per job, wall {wall:.3f} ms per job"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--variables", type=int, default=10)
    parser.add_argument("--dsn", default=None, help="a PostgreSQL journal instead of SQLite")
    asyncio.run(main(parser.parse_args()))
