"""The journal factory (:func:`open_journal`), the owner check, and the codec that turns a
job into the JSON payload the durable journals store."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from camunda_relay.clock import ManualClock
from camunda_relay.errors import ConfigurationError
from camunda_relay.journal import MemoryJournal, open_journal
from camunda_relay.journal import codec as journal_codec
from camunda_relay.journal.postgres import PostgresJournal
from camunda_relay.journal.sqlite import SqliteJournal
from tests.support.journals import EXPIRED, LIVE, make_job, rich_job


def test_open_journal_picks_the_store_from_the_setting(tmp_path: Path) -> None:
    clock = ManualClock()
    memory = open_journal(":memory:", owner="a", lease=LIVE, clock=clock)
    assert isinstance(memory, MemoryJournal)
    assert memory.owner == "a"
    assert memory.clock is clock
    for url in ("postgresql://u:p@localhost/db", "postgres://u:p@localhost/db"):
        assert isinstance(open_journal(url, owner="a", lease=LIVE), PostgresJournal)
    path = tmp_path / "new" / "folder" / "journal.sqlite3"
    sqlite = open_journal(str(path), owner="a", lease=EXPIRED, clock=clock)
    assert isinstance(sqlite, SqliteJournal)
    assert sqlite.clock is clock

    async def scenario() -> None:
        try:
            await sqlite.record(make_job(1))
        finally:
            await sqlite.close()

    asyncio.run(scenario())
    assert path.is_file()


@pytest.mark.parametrize("setting", ["mysql://u:p@localhost/db", "", "  "])
def test_open_journal_refuses_what_it_cannot_open(setting: str) -> None:
    with pytest.raises(ConfigurationError):
        open_journal(setting, owner="a", lease=LIVE)


def test_a_journal_needs_an_owner(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="owner"):
        SqliteJournal(tmp_path / "journal.sqlite3", owner=" ")
    with pytest.raises(ConfigurationError, match="owner"):
        MemoryJournal(owner="")


def test_the_payload_is_plain_json_with_typed_variables() -> None:
    payload = json.loads(journal_codec.dumps(rich_job()))
    assert payload["v"] == journal_codec.PAYLOAD_VERSION
    assert payload["state"] == "done"
    assert payload["task"]["variables"]["moment"] == {
        "value": "2026-11-27T21:00:00.123+0000",
        "type": "Date",
        "valueInfo": {},
    }
    assert payload["task"]["variables"]["java"] == {
        "type": "Object",
        "unreadable": True,
        "serializationFormat": "application/x-java-serialized-object",
    }
    assert payload["result"]["raw"] == {"value": "AP8=", "type": "Bytes", "valueInfo": {}}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "cannot be read"),
        ('{"v": 99, "task": {"id": "t-9"}}', "payload version 99"),
        ('{"v": 1, "task": {"id": "t-9"}}', "'t-9'.*missing field"),
    ],
)
def test_an_unreadable_payload_is_a_corrupt_job(text: str, problem: str) -> None:
    with pytest.raises(journal_codec.CorruptJob, match=problem):
        journal_codec.loads(text)


_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_MOMENTS = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
_VALUES = _JSON | st.binary(max_size=64) | _MOMENTS


@settings(max_examples=200, deadline=None)
@given(values=st.dictionaries(st.text(min_size=1), _VALUES, max_size=6), result=_VALUES)
def test_the_codec_round_trips_any_sendable_values(
    values: dict[str, object], result: object
) -> None:
    job = make_job(1, variables=values, result={"result": result})
    assert journal_codec.loads(journal_codec.dumps(job)) == job
