"""One reconciliation sweep at a time per journal: two workers (or journal objects) on one
SQLite file or one PostgreSQL table never sweep at once; separate journals do not exclude
each other; a holder that goes away frees the lock."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from camunda_relay import EngineClient, MemoryJournal, Router, Settings, Task, Worker
from camunda_relay.errors import JournalUnavailable
from camunda_relay.journal import Journal, open_journal
from camunda_relay.journal.postgres import PostgresJournal
from camunda_relay.journal.sweep_lock import LOCK_SUFFIX, sweep_lock
from camunda_relay.replies.reconciler import Orphan
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine
from tests.support.journals import fresh_database, unique_table
from tests.support.postgres import PostgresServer
from tests.support.tools import free_port


async def _both(first: Journal, second: Journal) -> tuple[bool, bool, bool]:
    """Whether the second gets the lock while the first holds it, and after."""
    async with sweep_lock(first) as held_first, sweep_lock(second) as held_second:
        pass
    async with sweep_lock(second) as held_after:
        pass
    return held_first, held_second, held_after


def test_two_journals_on_one_sqlite_file_sweep_one_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    first = open_journal(str(path), owner="a")
    second = open_journal(str(path), owner="b")
    assert asyncio.run(_both(first, second)) == (True, False, True)
    assert (tmp_path / f"journal.sqlite3{LOCK_SUFFIX}").exists()


def test_separate_sqlite_files_do_not_exclude_each_other(tmp_path: Path) -> None:
    first = open_journal(str(tmp_path / "a.sqlite3"), owner="a")
    second = open_journal(str(tmp_path / "b.sqlite3"), owner="b")
    assert asyncio.run(_both(first, second)) == (True, True, True)


def test_a_process_that_dies_holding_the_sqlite_lock_frees_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    lock = tmp_path / f"journal.sqlite3{LOCK_SUFFIX}"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
            " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdin is not None
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        journal = open_journal(str(path), owner="a")

        async def held() -> bool:
            async with sweep_lock(journal) as taken:
                return taken

        assert asyncio.run(held()) is False
        holder.kill()
        holder.wait(timeout=30)
        assert asyncio.run(held()) is True


def test_the_memory_journal_is_always_free() -> None:
    first, second = MemoryJournal(owner="a"), MemoryJournal(owner="b")
    assert asyncio.run(_both(first, second)) == (True, True, True)


def _reply_router() -> Router:
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        return {}

    return router


def test_two_workers_on_one_journal_sweep_one_at_a_time(tmp_path: Path) -> None:
    """While one worker's reconciler sweeps, the other's turn is skipped; afterwards the
    other sweeps."""
    settings = Settings(
        url="http://fake-engine/engine-rest", journal=str(tmp_path / "journal.sqlite3")
    )
    fake = FakeEngine()

    async def scenario() -> tuple[bool, bool, bool, list[str]]:
        def worker(name: str) -> Worker:
            client = EngineClient(settings, transport=fake.transport())
            return Worker(_reply_router(), settings, client=client, worker_id=name)

        sweeps: list[str] = []
        release = asyncio.Event()
        inside = asyncio.Event()

        def sweeper(name: str, block: bool) -> Callable[[], object]:
            async def sweep() -> list[Orphan]:
                sweeps.append(name)
                if block:
                    inside.set()
                    await release.wait()
                return []

            return sweep

        async with worker("a") as first, worker("b") as second:
            assert first.reconciler is not None
            assert second.reconciler is not None
            first.reconciler.sweep = sweeper("a", block=True)  # type: ignore[method-assign]
            second.reconciler.sweep = sweeper("b", block=False)  # type: ignore[method-assign]
            await first.resume()
            await second.resume()
            running = asyncio.ensure_future(first._recovery.sweep())
            await inside.wait()
            skipped = await second._recovery.sweep()
            release.set()
            swept_first = await running
            swept_second = await second._recovery.sweep()
        return swept_first, skipped, swept_second, sweeps

    swept_first, skipped, swept_second, sweeps = asyncio.run(
        asyncio.wait_for(scenario(), timeout=60)
    )
    assert (swept_first, skipped, swept_second) == (True, False, True)
    assert sweeps == ["a", "b"]


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:
    return fresh_database(postgres_server, "sweep_lock")


@pytest.mark.postgres
def test_two_journals_on_one_postgres_table_sweep_one_at_a_time(pg_dsn: str) -> None:
    table = unique_table()
    first = PostgresJournal(pg_dsn, owner="a", table=table)
    second = PostgresJournal(pg_dsn, owner="b", table=table)
    other = PostgresJournal(pg_dsn, owner="c", table=unique_table())

    async def scenario() -> tuple[tuple[bool, bool, bool], tuple[bool, bool, bool]]:
        try:
            return await _both(first, second), await _both(first, other)
        finally:
            for journal in (first, second, other):
                await journal.close()

    same, separate = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert same == (True, False, True)
    assert separate == (True, True, True)


@pytest.mark.postgres
def test_an_unreachable_database_is_no_sweep_and_no_secret() -> None:
    dsn = f"host=127.0.0.1 port={free_port()} user=u password=canary-pw dbname=d"
    journal = PostgresJournal(dsn, owner="a")

    async def scenario() -> None:
        async with sweep_lock(journal):
            pass

    with pytest.raises(JournalUnavailable) as raised:
        asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert "canary-pw" not in str(raised.value)
