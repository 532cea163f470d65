"""A handler's exception text may quote a variable's value: it reaches the engine (bounded)
and the journal, never a log line or the CLI's output unless asked for.

The canary: a handler doing ``int(task.variables["secret"])`` with a secret that is not a
number fails with ``ValueError: invalid literal for int() with base 10: 'CANARY-...'``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from camunda_relay import EngineClient, Router, Settings, Task, Worker
from camunda_relay.cli import cli
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine

CANARY = "CANARY-5be1c0de"
TEXT = logging.Formatter("%(levelname)s %(name)s: %(message)s")


def _settings(journal: Path, **changes: object) -> Settings:
    base = Settings(
        url="http://fake-engine/engine-rest", retries=0, journal=str(journal), worker_id="w1"
    )
    return dataclasses.replace(base, **changes)


def _router(*, reply: bool) -> Router:
    router = Router()

    @router.task(TOPIC, reply=MESSAGE if reply else None)
    def handle(task: Task) -> dict[str, object]:
        return {"n": int(task.variables["secret"])}

    return router


def _run(settings: Settings, router: Router) -> FakeEngine:
    fake = FakeEngine()
    fake.start("bk-1", variables={"secret": CANARY})

    async def main() -> None:
        client = EngineClient(settings, transport=fake.transport())
        async with Worker(router, settings, client=client) as worker:
            await worker.run_once()

    asyncio.run(asyncio.wait_for(main(), timeout=60))
    return fake


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record as a handler would print it, tracebacks included."""
    return "\n".join(TEXT.format(record) for record in caplog.records)


def test_a_failed_reply_handler_logs_type_and_ids_and_never_the_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "journal.sqlite3"
    with caplog.at_level(logging.DEBUG, logger="camunda_relay"):
        fake = _run(_settings(journal), _router(reply=True))
    logged = _logged(caplog)
    assert "ValueError" in logged
    assert CANARY not in logged
    failed = [r for r in caplog.records if "reply job failed" in r.getMessage()]
    assert len(failed) == 1
    assert getattr(failed[0], "job_id", None)
    # The engine's incident carries the bounded text: an operator with rights reads it there.
    (incident,) = fake.incidents
    assert "invalid literal for int()" in incident["message"]
    assert len(incident["message"]) <= 3900

    runner = CliRunner()
    listing = runner.invoke(cli, ["pending", "--all", "--json", "--journal", str(journal)])
    assert listing.exit_code == 0, listing.output
    (record,) = json.loads(listing.output)
    assert record["error"] == "work failed after 1 attempts (ValueError)"
    assert CANARY not in listing.output
    table = runner.invoke(cli, ["pending", "--all", "--journal", str(journal)])
    assert table.exit_code == 0
    assert "ValueError" in table.output
    assert CANARY not in table.output
    asked = runner.invoke(
        cli, ["pending", "--all", "--json", "--show-errors", "--journal", str(journal)]
    )
    assert asked.exit_code == 0
    assert CANARY in json.loads(asked.output)[0]["error_detail"]


def test_a_failed_plain_handler_reports_a_bounded_message_and_logs_only_the_type(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="camunda_relay"):
        fake = _run(_settings(tmp_path / "j.sqlite3"), _router(reply=False))
    assert CANARY not in _logged(caplog)
    (failure,) = fake.failures
    assert failure["errorMessage"].startswith("ValueError: invalid literal")
    assert len(failure["errorMessage"]) <= 500


def test_the_text_is_logged_when_asked_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path / "j.sqlite3", log_error_details=True)
    with caplog.at_level(logging.DEBUG, logger="camunda_relay"):
        _run(settings, _router(reply=True))
    assert CANARY in _logged(caplog)


def test_an_earlier_journals_error_text_is_not_shown(tmp_path: Path) -> None:
    """A journal written before the split kept the exception's text in ``error``."""
    from camunda_relay.journal.sqlite import SqliteJournal
    from camunda_relay.replies.job import JobState
    from tests.support.journals import make_job

    path = tmp_path / "old.sqlite3"
    old = make_job(
        1,
        state=JobState.FAILED,
        error=f"work failed after 3 attempts: ValueError: invalid literal: '{CANARY}'",
    )

    async def write() -> None:
        journal = SqliteJournal(path, owner="a")
        await journal.record(old)
        await journal.close()

    asyncio.run(write())
    listing = CliRunner().invoke(cli, ["pending", "--all", "--json", "--journal", str(path)])
    assert listing.exit_code == 0
    assert json.loads(listing.output)[0]["error"] == "work failed after 3 attempts (ValueError)"
    assert CANARY not in listing.output
