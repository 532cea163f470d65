"""Python values to Camunda typed values and back, as the REST API carries them.

Sending (:func:`encode`)::

    None                    Null
    bool                    Boolean
    int                     Integer (32 bits), Long (64 bits); larger is an error
    float                   Double; NaN and infinities are errors
    str                     String up to 4,000 characters, longer as Json (reads back as str)
    dict, list, tuple       Json (compact JSON text)
    datetime (aware), date  Date, "yyyy-MM-dd'T'HH:mm:ss.SSSZ" in UTC
    bytes, bytearray        Bytes (base64)
    File                    File (base64, with its file name, MIME type and encoding)
    anything else           VariableError; Java-serialised Object values are never sent

Reading (:func:`decode`) expects values fetched with ``deserializeValues=false``: Json (and
an Object serialised as ``application/json``) arrives as its JSON text and is parsed here;
Date becomes an aware datetime, Bytes bytes, File a :class:`File` (its bytes loaded on first
read: :mod:`camunda_relay.file_values`). Java-serialised Objects, unknown types and malformed
values become an :class:`Unreadable` marker; nothing Java is deserialised.

Error messages name the variable and the type, never the value (it may be personal data).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from camunda_relay.errors import JSON_UNSUPPORTED, InvalidInput, VariableError
from camunda_relay.file_values import File, file_value

__all__ = [
    "File",
    "Unreadable",
    "decode",
    "decode_all",
    "encode",
    "encode_all",
    "engine_date",
    "format_date",
    "parse_date",
    "validate_business_key",
]

# ACT_RU_VARIABLE.TEXT_ is varchar(4000); longer strings go to the byte array table as Json.
MAX_STRING_LENGTH = 4000
MAX_BUSINESS_KEY_LENGTH = 255
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_SIMPLE_TYPES = frozenset({"string", "boolean", "integer", "long", "short", "double"})
_JSON_FORMAT = "application/json"


@dataclass(frozen=True)
class Unreadable:
    """A variable this package does not read: a Java-serialised Object, an unknown type.

    It stands in for the value so a handler can see the variable exists; it cannot be sent back.
    """

    type: str
    serialization_format: str | None = None


class _NotJson(Exception):
    """Raised from inside ``json.dumps`` for a value JSON cannot represent."""

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.type_name = type_name


def _refuse(value: object) -> object:
    raise _NotJson(type(value).__name__)


def format_date(value: date) -> str:
    """Camunda's date format, ``yyyy-MM-dd'T'HH:mm:ss.SSSZ``, in UTC. A date is its midnight UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime")
        moment = value.astimezone(UTC)
    else:
        moment = datetime.combine(value, time(), tzinfo=UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}+0000"
    )


def parse_date(text: str) -> datetime:
    """Parse a date as the engine writes it (``2026-11-27T21:00:00.000+0000``); always aware."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("date without a time zone")
    return parsed


def engine_date(text: object) -> datetime | None:
    """A date field of an engine answer; None when it is missing or not a date."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_date(text)
    except ValueError:
        return None


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise VariableError(str(name), f"a variable name must be text, not {type(name).__name__}")
    if not name:
        raise VariableError(name, "a variable name must not be empty")
    return name


def _typed(value: object, type_name: str) -> dict[str, object]:
    return {"value": value, "type": type_name, "valueInfo": {}}


def _json_text(name: str, value: object) -> str:
    kind = type(value).__name__
    try:
        return json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_refuse
        )
    except _NotJson as error:
        problem = f"a {kind} cannot be sent as Json: it contains a {error.type_name}"
    except TypeError:
        problem = f"a {kind} cannot be sent as Json: a key is not text, a number, a bool or None"
    except ValueError:
        problem = f"a {kind} cannot be sent as Json: it contains NaN, infinity or a cycle"
    except RecursionError:
        problem = f"a {kind} cannot be sent as Json: it is nested too deeply"
    raise VariableError(name, problem) from None


def _encode_int(name: str, value: int) -> dict[str, object]:
    number = int(value)
    if _INT_MIN <= number <= _INT_MAX:
        return _typed(number, "Integer")
    if _LONG_MIN <= number <= _LONG_MAX:
        return _typed(number, "Long")
    raise VariableError(name, "an int beyond 64 bits cannot be sent (send it as a str)")


def encode(name: str, value: object, *, json_variables: bool = True) -> dict[str, object]:
    """One variable as the REST API wants it: ``{"value": ..., "type": ..., "valueInfo": {}}``.

    ``json_variables=False`` (an engine without Spin's JSON data format): a value that would
    be Json raises :class:`VariableError` saying so."""
    typed = _encode(_check_name(name), value)
    if not json_variables and typed["type"] == "Json":
        raise VariableError(
            name, f"a {type(value).__name__} is sent as Json, but {JSON_UNSUPPORTED}"
        )
    return typed


def _encode(name: str, value: object) -> dict[str, object]:
    if value is None:
        return _typed(None, "Null")
    if isinstance(value, bool):
        return _typed(value, "Boolean")
    if isinstance(value, int):
        return _encode_int(name, value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise VariableError(name, "a float that is NaN or infinite cannot be sent")
        return _typed(float(value), "Double")
    if isinstance(value, str):
        text = str.__str__(value)
        if len(text) <= MAX_STRING_LENGTH:
            return _typed(text, "String")
        return _typed(_json_text(name, text), "Json")
    if isinstance(value, dict | list | tuple):
        return _typed(_json_text(name, value), "Json")
    if isinstance(value, date):
        if isinstance(value, datetime) and value.utcoffset() is None:
            raise VariableError(name, "a naive datetime cannot be sent (give it a tzinfo)")
        return _typed(format_date(value), "Date")
    if isinstance(value, bytes | bytearray):
        return _typed(base64.b64encode(bytes(value)).decode("ascii"), "Bytes")
    if isinstance(value, File):
        return value.typed(name)
    raise VariableError(
        name,
        f"cannot send a {type(value).__name__} (send None, bool, int, float, str, dict, list, "
        "datetime, date, bytes or a File; Java-serialised objects are never sent)",
    )


def encode_all(
    values: Mapping[str, object], *, json_variables: bool = True
) -> dict[str, dict[str, object]]:
    """Encode every variable of a mapping; the first bad one raises :class:`VariableError`
    (as does any Json value when ``json_variables`` is False: see :func:`encode`)."""
    if not isinstance(values, Mapping):
        raise InvalidInput(
            f"variables must be a mapping of names to values, not a {type(values).__name__}"
        )
    return {
        name: encode(name, value, json_variables=json_variables) for name, value in values.items()
    }


class _Malformed(Exception):
    """A value of a known type that does not parse; it is read as :class:`Unreadable`."""


def _loads(value: object) -> object:
    # Fetched with deserializeValues=true, a Json value is a dump of Spin's node object
    # ({"nodeType": "OBJECT", ...}), not the data: only the JSON text is read.
    if not isinstance(value, str):
        raise _Malformed
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        raise _Malformed from None


def _date(value: object) -> datetime:
    try:
        if isinstance(value, str):
            return parse_date(value)
    except ValueError:
        pass
    raise _Malformed


def _bytes(value: object) -> bytes:
    try:
        if isinstance(value, str):
            return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        pass
    raise _Malformed


_PARSERS = {"json": _loads, "date": _date, "bytes": _bytes}


def decode(name: str, typed: Mapping[str, Any]) -> object:
    """One typed value from the engine as a Python value (see the module docstring).

    Never raises: what cannot be read (a Java object, a malformed value) becomes an
    :class:`Unreadable`, so one odd variable does not hide the task that carries it.
    """
    raw_type = typed.get("type")
    type_name = raw_type if isinstance(raw_type, str) else "unknown"
    kind = type_name.lower()
    value = typed.get("value")
    info = typed.get("valueInfo")
    data_format = info.get("serializationDataFormat") if isinstance(info, Mapping) else None
    if not isinstance(data_format, str):
        data_format = None
    if kind == "null":
        return None
    if kind in _SIMPLE_TYPES:
        return value
    if kind == "file":
        try:
            return file_value(name, value, info if isinstance(info, Mapping) else {})
        except (ValueError, binascii.Error, VariableError):
            return Unreadable(type_name, data_format)
    if kind == "object" and data_format == _JSON_FORMAT:
        if not isinstance(value, str):
            return value  # None, or already deserialised by the engine (a JSON map or list)
        kind = "json"
    parse = _PARSERS.get(kind)
    if parse is None:
        return Unreadable(type_name, data_format)
    if value is None:
        return None
    try:
        return parse(value)
    except _Malformed:
        return Unreadable(type_name, data_format)


def decode_all(typed: Mapping[str, Mapping[str, Any]]) -> dict[str, object]:
    """Decode every variable of a fetched task or a variables response."""
    return {name: decode(name, value) for name, value in typed.items()}


def validate_business_key(key: str) -> str:
    """Return ``key`` if the engine can store and match it; else :class:`InvalidInput`.

    The message names the problem (empty, too long, a control character) but not the key.
    """
    if not isinstance(key, str):
        raise InvalidInput(f"a business key must be text, not {type(key).__name__}")
    if not key:
        raise InvalidInput("the business key is empty")
    if len(key) > MAX_BUSINESS_KEY_LENGTH:
        raise InvalidInput(
            f"the business key has {len(key)} characters; "
            f"the engine stores at most {MAX_BUSINESS_KEY_LENGTH}"
        )
    for position, char in enumerate(key):
        if unicodedata.category(char) == "Cc":
            raise InvalidInput(
                f"the business key contains a control character (U+{ord(char):04X}) "
                f"at position {position}"
            )
    return key
