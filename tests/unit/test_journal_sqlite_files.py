"""The SQLite journal's file: created for its owner only, loud when it is new or empty, and
refused with one line when it cannot be a journal (damaged, not SQLite, truncated, a place
where no file can be made)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from camunda_relay.errors import ConfigurationError, JournalError
from camunda_relay.journal import open_journal
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.job import JobState
from tests.support.journals import make_job


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _fill(path: Path, jobs: int = 200) -> None:
    """A journal with ``jobs`` jobs, checkpointed into the main file (no -wal left)."""

    async def scenario() -> None:
        journal = SqliteJournal(path, owner="a")
        try:
            for number in range(jobs):
                await journal.record(make_job(number, variables={"pad": "x" * 400}))
        finally:
            await journal.close()

    asyncio.run(scenario())
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _open_and_count(path: Path) -> dict[JobState, int]:
    async def scenario() -> dict[JobState, int]:
        journal = SqliteJournal(path, owner="a")
        try:
            return await journal.counts()
        finally:
            await journal.close()

    return asyncio.run(scenario())


def test_the_file_its_wal_and_new_folders_are_the_owners_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state" / "journal.sqlite3"
    old = os.umask(0o022)
    try:

        async def scenario() -> None:
            journal = SqliteJournal(path, owner="a")
            try:
                await journal.record(make_job(1))
                for name in ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm"):
                    assert _mode(path.parent / name) == 0o600, name
            finally:
                await journal.close()

        asyncio.run(scenario())
    finally:
        os.umask(old)
    assert _mode(tmp_path / "new") == 0o700
    assert _mode(tmp_path / "new" / "state") == 0o700


def test_a_folder_the_user_made_is_left_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    assert sum(_open_and_count(shared / "journal.sqlite3").values()) == 0
    assert _mode(shared) == 0o755
    assert _mode(shared / "journal.sqlite3") == 0o600


def test_a_journal_made_where_there_was_none_is_said_without_alarm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A first start (make run on a fresh clone) is no loss: an INFO line, not a WARNING. A
    journal deleted with its -wal looks the same; the sweep that runs at once then reports
    the instances left waiting (tests/engine/test_lost_journal.py)."""
    path = tmp_path / "journal.sqlite3"
    with caplog.at_level(logging.INFO, logger="camunda_relay"):
        _open_and_count(path)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    (created,) = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert "created" in created


def test_an_emptied_journal_is_a_warning_naming_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="camunda_relay"):
        _open_and_count(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0]
    assert "new or empty" in warnings[0]
    assert "lost" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="camunda_relay"):
        _open_and_count(path)  # the second time it is known
    assert not caplog.records


def test_a_journal_whose_wal_was_deleted_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.sqlite3"
    lost = tmp_path / "lost.sqlite3"

    async def scenario() -> None:
        journal = SqliteJournal(path, owner="a")
        try:
            await journal.record(make_job(1))
            assert path.with_name(path.name + "-wal").stat().st_size > 0
            lost.write_bytes(path.read_bytes())  # the main file without its -wal
        finally:
            await journal.close()

    asyncio.run(scenario())
    with caplog.at_level(logging.WARNING, logger="camunda_relay"):
        counts = _open_and_count(lost)
    assert sum(counts.values()) == 0
    assert any(str(lost) in r.getMessage() for r in caplog.records)


def _damage_a_page(path: Path) -> None:
    """Overwrite the root page of the jobs table with garbage."""
    with sqlite3.connect(path) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'relay_jobs'"
        ).fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    data = bytearray(path.read_bytes())
    data[(root - 1) * size : root * size] = b"\x5a" * size
    path.write_bytes(bytes(data))


def test_a_damaged_page_is_refused_at_open_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    _fill(path)
    _damage_a_page(path)
    with pytest.raises(JournalError) as raised:
        _open_and_count(path)
    message = str(raised.value)
    assert not raised.value.retryable
    assert "\n" not in message
    assert str(path) in message
    assert "damaged" in message


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_a_file_that_is_not_a_whole_journal_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "journal.sqlite3"
    if kind == "garbage":
        path.write_bytes(b"not a database, only text\n" * 200)
    else:
        _fill(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(JournalError, match="damaged or not a journal") as raised:
        _open_and_count(path)
    assert not raised.value.retryable
    assert "\n" not in str(raised.value)


def test_a_journal_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(JournalError, match="cannot be created") as raised:
        _open_and_count(tmp_path / "a-file" / "journal.sqlite3")
    assert not raised.value.retryable


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_journal_in_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(JournalError, match=r"cannot be created.*Permission denied"):
            _open_and_count(folder / "journal.sqlite3")
    finally:
        folder.chmod(0o755)


def test_a_folder_it_may_not_write_is_one_line_whoever_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the test above, where root writes anyway: the operating system's refusal."""
    from camunda_relay.journal import sqlite_connection as journal_sqlite

    path = tmp_path / "read-only" / "journal.sqlite3"

    def refused(target: Path) -> Path:
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(journal_sqlite, "private_file", refused)
    with pytest.raises(JournalError) as raised:
        _open_and_count(path)
    assert str(raised.value) == (
        f"SQLite journal {path} cannot be created (Permission denied: {path})"
    )
    assert not raised.value.retryable


def test_a_postgres_keyword_dsn_is_refused_not_made_a_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    dsn = "host=127.0.0.1 port=5432 user=relay password=hunter2 dbname=jobs"
    with pytest.raises(ConfigurationError, match="postgresql://") as refused:
        open_journal(dsn, owner="a")
    assert "hunter2" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []
