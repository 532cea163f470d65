"""A :class:`~camunda_relay.replies.job.Job` as JSON, the payload both durable journals store.

The payload is plain JSON, readable by any tool::

    {"v": 1, "message": "sample_response", "state": "done", ..., "deadline": 1760000000.5,
     "task": {"id": ..., "topic": ..., "lock_expiration": "2026-...+00:00",
              "variables": {"name": {"value": ..., "type": "String", "valueInfo": {}}}},
     "result": {"var1": {"value": 1, "type": "Integer", "valueInfo": {}}}}

Variables and the result are kept in the engine's typed wire form
(:func:`camunda_relay.variables.encode`), so datetimes, bytes and Json values read back as
they were sent, with the same limits: a datetime keeps milliseconds, a tuple reads back as
a list, a ``date`` as midnight UTC. An :class:`~camunda_relay.variables.Unreadable` is kept
as ``{"type": ..., "unreadable": true, "serializationFormat": ...}``. A value that cannot
be encoded raises :class:`~camunda_relay.errors.VariableError`, naming the variable only.

:func:`columns` gives the fields a journal keeps in columns of their own (to list and
count jobs without reading payloads). Payloads are data: never log them.

The SQLite journal (schema 4 on) keeps a job in two parts instead: what never changes after
its first attempt, its task and message, as a payload of version 2 written once
(:func:`dumps_task`: ``{"v": 2, "message": ..., "by_business_key": ..., "task": {...}}``),
and what changes with each step in columns (:func:`columns`, and :func:`values` for the two
that may hold values: the encoded ``result`` and ``error_detail``), so that a step writes
its columns only. :func:`from_row` reads a job back from those columns (:data:`ROW`), with a
payload of either version (a version-1 payload's own copies of the columns are not read).

An :class:`~camunda_relay.replies.job.Answer` (what a reply token's holder sent) is kept in
a column of its own, beside the payload (:func:`dumps_answer`): ``{"variables": {...}}`` in
the same typed form, or ``{"failure": "reason"}``, with ``"trace": {"traceparent": ...}``
(the answerer's trace context) while tracing is on. The reply token itself is never stored,
only its hash.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from camunda_relay import variables
from camunda_relay.errors import CorruptJob
from camunda_relay.replies.job import Answer, Job, JobState
from camunda_relay.task import Task

__all__ = [
    "PAYLOAD_VERSION",
    "ROW",
    "TASK_PAYLOAD_VERSION",
    "CorruptJob",  # re-exported: the error lives in camunda_relay.errors
    "columns",
    "dumps",
    "dumps_answer",
    "dumps_task",
    "from_payload",
    "from_row",
    "loads",
    "loads_answer",
    "to_payload",
    "values",
]

PAYLOAD_VERSION = 1
TASK_PAYLOAD_VERSION = 2
"""The version of :func:`dumps_task`'s payload: the task and message alone."""

ROW = (
    "payload",
    "answer",
    "state",
    "attempts",
    "deliveries",
    "error",
    "error_detail",
    "deadline",
    "created_at",
    "updated_at",
    "token_hash",
    "result",
    "filter_key",
)
"""The columns :func:`from_row` reads a job from, in its order."""

# The reply token lives in memory only (the handler's attempt); the journal keeps its hash.
# The cancellation event is the running attempt's too.
_TASK_FIELDS = tuple(
    field.name
    for field in dataclasses.fields(Task)
    if field.name not in ("reply_token", "cancelled")
)
_TASK_DATETIMES = frozenset({"lock_expiration"})
_PLAIN = (str, int, float, bool, type(None))


# -- writing ---------------------------------------------------------------------------------


def _encode_value(name: str, value: object) -> dict[str, object]:
    if isinstance(value, variables.File) and not value.loaded:
        # A fetched File's description only: its bytes stay in the engine.
        typed = variables.File(value.name, b"", value.mime_type, value.encoding).typed(name)
        return {**typed, "value": None}
    if isinstance(value, variables.Unreadable):
        return {
            "type": value.type,
            "unreadable": True,
            "serializationFormat": value.serialization_format,
        }
    return variables.encode(name, value)


def _encode_values(values: Mapping[str, Any]) -> dict[str, dict[str, object]]:
    return {name: _encode_value(name, value) for name, value in values.items()}


def _task_payload(task: Task) -> dict[str, object]:
    data: dict[str, object] = {}
    for name in _TASK_FIELDS:
        value = getattr(task, name)
        if name == "variables":
            data[name] = _encode_values(value)
        elif name == "extension_properties":
            data[name] = dict(value)
        elif name in _TASK_DATETIMES:
            data[name] = value.isoformat() if value is not None else None
        elif isinstance(value, _PLAIN):
            data[name] = value
        else:  # a new Task field of a kind this codec does not know yet
            raise TypeError(f"Task.{name} ({type(value).__name__}) has no journal encoding")
    return data


def to_payload(job: Job) -> dict[str, object]:
    """The job as JSON-able data (see the module docstring)."""
    return {
        "v": PAYLOAD_VERSION,
        "message": job.message,
        "by_business_key": job.by_business_key,
        "state": job.state.value,
        "attempts": job.attempts,
        "deliveries": job.deliveries,
        "error": job.error,
        "error_detail": job.error_detail,
        "deadline": job.deadline,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "task": _task_payload(job.task),
        "result": _encode_values(job.result) if job.result is not None else None,
        "token_hash": job.token_hash,
        "filter_key": job.filter_key,
    }


def _dumps(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps(job: Job) -> str:
    """The job as compact JSON text."""
    return _dumps(to_payload(job))


def dumps_task(job: Job) -> str:
    """The part of the job that never changes after its first attempt, as compact JSON text
    (a payload of :data:`TASK_PAYLOAD_VERSION`)."""
    return _dumps(
        {
            "v": TASK_PAYLOAD_VERSION,
            "message": job.message,
            "by_business_key": job.by_business_key,
            "task": _task_payload(job.task),
        }
    )


def values(job: Job) -> dict[str, object]:
    """The job's columns that may hold values: ``result`` (compact JSON text, or None) and
    ``error_detail``."""
    result = _dumps(_encode_values(job.result)) if job.result is not None else None
    return {"result": result, "error_detail": job.error_detail}


def columns(job: Job) -> dict[str, object]:
    """The job's fields a journal keeps in columns beside the payload (no variable values)."""
    return {
        "id": job.id,
        "topic": job.task.topic,
        "process_instance_id": job.task.process_instance_id,
        "business_key": job.task.business_key,
        "state": job.state.value,
        "attempts": job.attempts,
        "deliveries": job.deliveries,
        "error": job.error,
        "deadline": job.deadline,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "token_hash": job.token_hash,
        "filter_key": job.filter_key,
    }


def dumps_answer(answer: Answer) -> str:
    """An answer as the JSON text its column keeps."""
    data: dict[str, object] = (
        {"failure": answer.failure}
        if answer.failure is not None
        else {"variables": _encode_values(answer.variables or {})}
    )
    if answer.trace:
        data["trace"] = dict(answer.trace)
    return _dumps(data)


def loads_answer(text: str | bytes | Mapping[str, Any] | None) -> Answer | None:
    """The answer :func:`dumps_answer` wrote (None for none); :class:`CorruptJob` when it
    cannot be read."""
    if text is None:
        return None
    try:
        data = json.loads(text) if isinstance(text, str | bytes) else text
        if not isinstance(data, Mapping):
            raise TypeError("the answer is not a JSON object")
        trace = _trace(data.get("trace"))
        if data.get("failure") is not None:
            return Answer(failure=str(data["failure"]), trace=trace)
        return Answer(variables=_decode_values(data.get("variables", {})), trace=trace)
    except (ValueError, TypeError, KeyError, RecursionError):
        raise CorruptJob("a stored reply answer cannot be read") from None


def _trace(data: object) -> dict[str, str] | None:
    """An answer's trace context; None for none, or one that is not text (never an error:
    it only links spans)."""
    if not isinstance(data, Mapping):
        return None
    return {str(k): v for k, v in data.items() if isinstance(v, str)} or None


# -- reading ---------------------------------------------------------------------------------


def _decode_value(name: str, typed: Mapping[str, Any]) -> object:
    if typed.get("unreadable") is True:
        type_name = typed.get("type")
        data_format = typed.get("serializationFormat")
        return variables.Unreadable(
            type_name if isinstance(type_name, str) else "unknown",
            data_format if isinstance(data_format, str) else None,
        )
    return variables.decode(name, typed)


def _decode_values(data: object) -> dict[str, object]:
    if not isinstance(data, Mapping):
        raise TypeError("variables are not a mapping")
    return {str(name): _decode_value(str(name), typed) for name, typed in data.items()}


def _task(data: object) -> Task:
    if not isinstance(data, Mapping):
        raise TypeError("task is not a mapping")
    fields: dict[str, Any] = {name: data[name] for name in _TASK_FIELDS if name in data}
    fields["variables"] = _decode_values(data.get("variables", {}))
    for name in _TASK_DATETIMES:
        if fields.get(name) is not None:
            fields[name] = datetime.fromisoformat(fields[name])
    return Task(**fields)


def _job_id(data: object) -> str:
    """The job id a payload names, for the error that says it cannot be read (``?``: none)."""
    task = data.get("task") if isinstance(data, Mapping) else None
    return str(task.get("job_id") or task.get("id") or "?") if isinstance(task, Mapping) else "?"


def _payload(data: object, job_id: str, versions: tuple[int, ...]) -> Mapping[str, Any]:
    """``data`` as a payload of one of ``versions`` (the last one named when it is not)."""
    if not isinstance(data, Mapping):
        raise TypeError("the payload is not a JSON object")
    version = data.get("v")
    if version not in versions:
        raise CorruptJob(
            f"job {job_id!r}: payload version {version!r} is not {versions[-1]} "
            "(written by another camunda-relay version?)"
        )
    return data


def _unreadable(error: Exception, job_id: str) -> CorruptJob:
    problem = f"missing field {error}" if isinstance(error, KeyError) else type(error).__name__
    return CorruptJob(f"job {job_id!r}: the stored payload cannot be read ({problem})")


def from_payload(data: object, answer: Answer | None = None) -> Job:
    """The job that :func:`to_payload` wrote (with the ``answer`` read beside it);
    :class:`CorruptJob` when it cannot be read."""
    job_id = _job_id(data)
    try:
        data = _payload(data, job_id, (PAYLOAD_VERSION,))
        result = data["result"]
        return Job(
            task=_task(data.get("task")),
            message=data["message"],
            by_business_key=bool(data["by_business_key"]),
            state=JobState(data["state"]),
            attempts=int(data["attempts"]),
            deliveries=int(data["deliveries"]),
            result=_decode_values(result) if result is not None else None,
            error=data["error"],
            error_detail=data.get("error_detail"),  # absent in payloads of earlier versions
            deadline=float(data["deadline"]) if data["deadline"] is not None else None,
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            token_hash=data.get("token_hash"),  # absent in payloads of earlier versions
            answer=answer,
            filter_key=str(data.get("filter_key") or ""),  # likewise
        )
    except CorruptJob:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _unreadable(error, job_id) from None


def loads(text: str | bytes, answer: str | bytes | None = None) -> Job:
    """The job that :func:`dumps` wrote (and the answer :func:`dumps_answer` wrote beside
    it); :class:`CorruptJob` when it cannot be read."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise CorruptJob("a stored job payload is not valid JSON") from None
    return from_payload(data, loads_answer(answer))


def _json(text: object, what: str) -> object:
    if not isinstance(text, str | bytes):
        return text  # None, or read as data already
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise CorruptJob(f"a stored job {what} is not valid JSON") from None


def from_row(row: Sequence[Any]) -> Job:
    """The job kept in the columns :data:`ROW` names (in its order; times in epoch seconds),
    with a payload of either version; :class:`CorruptJob` when it cannot be read."""
    fields = dict(zip(ROW, row, strict=True))
    data = _json(fields["payload"], "payload")
    answer = loads_answer(fields["answer"])
    job_id = _job_id(data)
    try:
        data = _payload(data, job_id, (PAYLOAD_VERSION, TASK_PAYLOAD_VERSION))
        result = _json(fields["result"], "result")
        deadline = fields["deadline"]
        return Job(
            task=_task(data.get("task")),
            message=data["message"],
            by_business_key=bool(data["by_business_key"]),
            state=JobState(fields["state"]),
            attempts=int(fields["attempts"]),
            deliveries=int(fields["deliveries"]),
            result=_decode_values(result) if result is not None else None,
            error=fields["error"],
            error_detail=fields["error_detail"],
            deadline=float(deadline) if deadline is not None else None,
            created_at=float(fields["created_at"]),
            updated_at=float(fields["updated_at"]),
            token_hash=fields["token_hash"],
            answer=answer,
            filter_key=str(fields["filter_key"] or ""),
        )
    except CorruptJob:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _unreadable(error, job_id) from None
