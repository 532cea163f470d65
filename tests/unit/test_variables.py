"""Python values <-> Camunda typed values, without an engine."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from camunda_relay.errors import InvalidInput, VariableError
from camunda_relay.variables import (
    Unreadable,
    decode,
    decode_all,
    encode,
    encode_all,
    format_date,
    parse_date,
    validate_business_key,
)

CANARY = "canary-7f3a9c"


def round_trip(value: object) -> object:
    return decode("v", encode("v", value))


# -- encode: one rule each --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name", "wire"),
    [
        (None, "Null", None),
        (True, "Boolean", True),
        (False, "Boolean", False),
        (0, "Integer", 0),
        (2**31 - 1, "Integer", 2**31 - 1),
        (-(2**31), "Integer", -(2**31)),
        (2**31, "Long", 2**31),
        (-(2**31) - 1, "Long", -(2**31) - 1),
        (2**63 - 1, "Long", 2**63 - 1),
        (-(2**63), "Long", -(2**63)),
        (1.5, "Double", 1.5),
        (-0.0, "Double", -0.0),
        ("", "String", ""),
        ("é" * 4000, "String", "é" * 4000),
        ({"a": [1, None, "x"]}, "Json", '{"a":[1,null,"x"]}'),
        ([1, 2], "Json", "[1,2]"),
        ((1, "two"), "Json", '[1,"two"]'),
        ({}, "Json", "{}"),
        (b"\x00\x01\xff", "Bytes", "AAH/"),
        (bytearray(b"ab"), "Bytes", "YWI="),
        (date(2026, 11, 27), "Date", "2026-11-27T00:00:00.000+0000"),
        (
            datetime(2026, 11, 27, 21, 0, 0, 123456, tzinfo=UTC),
            "Date",
            "2026-11-27T21:00:00.123+0000",
        ),
    ],
)
def test_encode_picks_the_camunda_type(value: object, type_name: str, wire: object) -> None:
    assert encode("v", value) == {"value": wire, "type": type_name, "valueInfo": {}}


def test_bool_is_not_an_integer() -> None:
    assert encode("flag", True)["type"] == "Boolean"


def test_aware_datetime_is_sent_in_utc() -> None:
    berlin_winter = timezone(timedelta(hours=1))
    typed = encode("at", datetime(2026, 11, 27, 22, 0, tzinfo=berlin_winter))
    assert typed["value"] == "2026-11-27T21:00:00.000+0000"


def test_long_string_goes_as_json_and_reads_back_as_str() -> None:
    text = "x" * 4001
    typed = encode("report", text)
    assert typed["type"] == "Json"
    assert json.loads(str(typed["value"])) == text
    assert decode("report", typed) == text


def test_str_subclass_is_sent_as_its_text() -> None:
    class Name(str):
        def __str__(self) -> str:
            return "something else"

    assert encode("name", Name("plain"))["value"] == "plain"


def test_int_beyond_64_bits_is_refused() -> None:
    with pytest.raises(VariableError, match=r"'huge'.*64 bits"):
        encode("huge", 2**63)
    with pytest.raises(VariableError, match="64 bits"):
        encode("huge", -(2**63) - 1)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_is_refused(value: float) -> None:
    with pytest.raises(VariableError, match=r"'ratio'.*NaN or infinite"):
        encode("ratio", value)


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(VariableError, match=r"'due'.*naive datetime"):
        encode("due", datetime(2026, 11, 27, 21, 0))


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "set"),
        (Decimal("1.5"), "Decimal"),
        (object(), "object"),
        (frozenset(), "frozenset"),
        (Unreadable("Object", "application/x-java-serialized-object"), "Unreadable"),
    ],
)
def test_other_types_are_refused_by_name(value: object, type_name: str) -> None:
    with pytest.raises(VariableError, match=rf"'thing': cannot send a {type_name} "):
        encode("thing", value)


@pytest.mark.parametrize("name", ["", None, 3])
def test_variable_names_must_be_non_empty_text(name: Any) -> None:
    with pytest.raises(VariableError, match="variable name"):
        encode(name, 1)


# -- error messages never carry the value ---------------------------------------------------


class Secretive:
    def __repr__(self) -> str:
        return CANARY

    __str__ = __repr__


def _nested(depth: int) -> object:
    value: object = CANARY
    for _ in range(depth):
        value = [value]
    return value


def _cycle() -> object:
    loop: list[object] = [CANARY]
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: {"note": CANARY, "bad": {CANARY}}, "contains a set"),
        (lambda: {"note": CANARY, "bad": Secretive()}, "contains a Secretive"),
        (lambda: {(CANARY, 1): "tuple key"}, "a key is not text"),
        (lambda: [CANARY, float("nan")], "NaN, infinity or a cycle"),
        (_cycle, "NaN, infinity or a cycle"),
        (lambda: _nested(100_000), "nested too deeply"),
        (Secretive, "cannot send a Secretive"),
        (lambda: {CANARY}, "cannot send a set"),
    ],
    ids=["set-inside", "object-inside", "tuple-key", "nan-inside", "cycle", "deep", "obj", "set"],
)
def test_errors_name_the_variable_never_the_value(make: Callable[[], object], problem: str) -> None:
    with pytest.raises(VariableError) as caught:
        encode("payload", make())
    message = str(caught.value)
    assert "'payload'" in message
    assert problem in message
    assert CANARY not in message
    assert CANARY not in repr(caught.value.args)
    assert caught.value.name == "payload"
    # Nor does a chained exception (json's own message) carry it along.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_encode_all_encodes_each_and_stops_at_the_first_bad_one() -> None:
    encoded = encode_all({"a": 1, "b": "x"})
    assert encoded == {
        "a": {"value": 1, "type": "Integer", "valueInfo": {}},
        "b": {"value": "x", "type": "String", "valueInfo": {}},
    }
    with pytest.raises(VariableError, match="'b'"):
        encode_all({"a": 1, "b": {CANARY}})


def test_encode_all_wants_a_mapping() -> None:
    with pytest.raises(InvalidInput, match="mapping"):
        encode_all([("a", 1)])  # type: ignore[arg-type]


# -- decode ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ({"type": "String", "value": "x", "valueInfo": {}}, "x"),
        ({"type": "Boolean", "value": False, "valueInfo": {}}, False),
        ({"type": "Integer", "value": 7, "valueInfo": {}}, 7),
        ({"type": "Long", "value": 2**40, "valueInfo": {}}, 2**40),
        ({"type": "Short", "value": 3, "valueInfo": {}}, 3),
        ({"type": "Double", "value": 0.25, "valueInfo": {}}, 0.25),
        ({"type": "Null", "value": None, "valueInfo": {}}, None),
        ({"type": "Json", "value": '{"a":[1]}', "valueInfo": {}}, {"a": [1]}),
        ({"type": "Json", "value": None, "valueInfo": {}}, None),
        ({"type": "Bytes", "value": "AAH/", "valueInfo": {}}, b"\x00\x01\xff"),
        ({"type": "Bytes", "value": None, "valueInfo": {}}, None),
        ({"type": "Date", "value": None, "valueInfo": {}}, None),
        (
            {"type": "Date", "value": "2026-11-27T22:00:00.250+0100", "valueInfo": {}},
            datetime(2026, 11, 27, 21, 0, 0, 250000, tzinfo=UTC),
        ),
        (
            {
                "type": "Object",
                "value": '{"b":2}',
                "valueInfo": {
                    "objectTypeName": "java.util.HashMap",
                    "serializationDataFormat": "application/json",
                },
            },
            {"b": 2},
        ),
        ({"type": "string", "value": "lower-case type", "valueInfo": {}}, "lower-case type"),
        (
            {
                "type": "Object",
                "value": {"b": 2},
                "valueInfo": {"serializationDataFormat": "application/json"},
            },
            {"b": 2},
        ),
    ],
)
def test_decode(typed: dict[str, Any], expected: object) -> None:
    assert decode("v", typed) == expected


def test_decoded_dates_are_aware() -> None:
    decoded = decode("at", {"type": "Date", "value": "2026-11-27T21:00:00.000+0000"})
    assert isinstance(decoded, datetime)
    assert decoded.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        (
            {
                "type": "Object",
                "value": "rO0ABXQAA2FiYw==",
                "valueInfo": {
                    "objectTypeName": "java.lang.String",
                    "serializationDataFormat": "application/x-java-serialized-object",
                },
            },
            Unreadable("Object", "application/x-java-serialized-object"),
        ),
        (
            {"type": "File", "value": "not base64!", "valueInfo": {"filename": "a.txt"}},
            Unreadable("File", None),
        ),
        ({"type": "Xml", "value": "<a/>", "valueInfo": {}}, Unreadable("Xml", None)),
        ({"value": 1}, Unreadable("unknown", None)),
        # Malformed values of known types do not hide the task that carries them.
        ({"type": "Json", "value": "{not json", "valueInfo": {}}, Unreadable("Json", None)),
        ({"type": "Date", "value": "yesterday", "valueInfo": {}}, Unreadable("Date", None)),
        ({"type": "Bytes", "value": "***", "valueInfo": {}}, Unreadable("Bytes", None)),
        # A Json value fetched with deserializeValues=true is a dump of Spin's node object.
        (
            {"type": "Json", "value": {"nodeType": "OBJECT", "object": True}, "valueInfo": {}},
            Unreadable("Json", None),
        ),
    ],
)
def test_what_is_not_read_becomes_unreadable(typed: dict[str, Any], expected: Unreadable) -> None:
    assert decode("v", typed) == expected


def test_unreadable_is_frozen() -> None:
    marker = Unreadable("File")
    with pytest.raises(AttributeError):
        marker.type = "String"  # type: ignore[misc]


def test_decode_all() -> None:
    fetched: dict[str, dict[str, Any]] = {
        "a": {"type": "Integer", "value": 1, "valueInfo": {}},
        "b": {"type": "Json", "value": "[true]", "valueInfo": {}},
    }
    assert decode_all(fetched) == {"a": 1, "b": [True]}


# -- round trips ------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_json_values)
def test_json_compatible_values_round_trip(value: object) -> None:
    assert round_trip(value) == value


@given(st.binary())
def test_bytes_round_trip(value: bytes) -> None:
    assert round_trip(value) == value


@given(st.datetimes(timezones=st.timezones(), allow_imaginary=False))
def test_datetimes_round_trip_to_the_millisecond(value: datetime) -> None:
    decoded = round_trip(value)
    assert isinstance(decoded, datetime)
    expected = value.replace(microsecond=value.microsecond // 1000 * 1000)
    # In UTC: an ambiguous wall time (fold) never compares equal across zones.
    assert decoded == expected.astimezone(UTC)


def test_tuple_comes_back_as_a_list() -> None:
    assert round_trip((1, 2)) == [1, 2]


def test_date_comes_back_as_midnight_utc() -> None:
    assert round_trip(date(2026, 2, 28)) == datetime(2026, 2, 28, tzinfo=UTC)


def test_format_and_parse_date() -> None:
    moment = datetime(2026, 11, 27, 21, 0, 0, 5000, tzinfo=UTC)
    assert format_date(moment) == "2026-11-27T21:00:00.005+0000"
    assert parse_date(format_date(moment)) == moment
    with pytest.raises(ValueError, match="time zone"):
        parse_date("2026-11-27T21:00:00.000")


def test_bytes_are_base64_on_the_wire() -> None:
    assert base64.b64decode(str(encode("b", b"hello")["value"])) == b"hello"


# -- business keys ------------------------------------------------------------------------------


def test_good_business_keys_pass() -> None:
    for key in ("order-1", "x" * 255, "Bestellung äöü 42"):
        assert validate_business_key(key) == key


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("k" * 256, "256 characters; the engine stores at most 255"),
        ("order\n1", r"control character \(U\+000A\) at position 5"),
        ("order\x001", r"control character \(U\+0000\)"),
        ("a\tb", r"U\+0009"),
        ("a\x7fb", r"U\+007F"),
    ],
)
def test_bad_business_keys_are_named(key: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        validate_business_key(key)


def test_business_key_errors_do_not_repeat_the_key() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_business_key(CANARY + "\n" + "x" * 300)
    assert CANARY not in str(caught.value)


def test_business_key_must_be_text() -> None:
    with pytest.raises(InvalidInput, match="text, not int"):
        validate_business_key(42)  # type: ignore[arg-type]
