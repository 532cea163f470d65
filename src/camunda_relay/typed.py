"""Typed handler inputs and outputs: dataclasses (or pydantic models) instead of mappings.

A handler may take, after the task, parameters named after process variables and annotated
with a type; it may return a dataclass or a pydantic model::

    @dataclass
    class Order:
        id: int
        items: list[str]

    @dataclass
    class Receipt:
        total: float
        paid: bool

    @router.task("charge")
    async def charge(task: Task, order: Order, note: str | None = None) -> Receipt: ...

Before the handler runs, each such variable is converted to its annotation (a dataclass or a
model from a Json object, nested ones too; ``int``, ``float``, ``str``, ``bool``, ``list``,
``dict``, ``datetime``, ``date``, unions and ``None``). A variable that is missing (and has
no default) or does not fit is a failure reported to the engine with no retries left (an
incident: retrying does not change the variables), naming the variable, where in it, and the
type expected, never the value. A returned dataclass or model becomes one variable per field.
A handler without such annotations is called as it is.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any, Union

from camunda_relay.errors import ConfigurationError
from camunda_relay.task import Complete, RetryLater, Task
from camunda_relay.variables import parse_date

__all__ = ["InputMismatch", "typed_handler"]

try:  # pydantic is optional
    from pydantic import BaseModel as _Model
    from pydantic import ValidationError as _Invalid
except ImportError:  # pragma: no cover - without pydantic installed
    _Model = None  # type: ignore[assignment,misc]
    _Invalid = None  # type: ignore[assignment,misc]

_MISSING = inspect.Parameter.empty


class InputMismatch(RetryLater):
    """A variable a typed handler takes is missing or of another type: an incident at once."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retries=0)


class _Mismatch(Exception):
    def __init__(self, where: str, expected: str) -> None:
        super().__init__(where, expected)
        self.where, self.expected = where, expected


def _name(tp: object) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_model(tp: object) -> bool:
    return _Model is not None and isinstance(tp, type) and issubclass(tp, _Model)


def _is_structured(tp: object) -> bool:
    """A dataclass or a model that stands for variables (a :class:`Complete` is an outcome)."""
    if tp is Complete:
        return False
    return (isinstance(tp, type) and dataclasses.is_dataclass(tp)) or _is_model(tp)


def _fields(tp: type, value: object, where: str) -> object:
    if not isinstance(value, Mapping):
        raise _Mismatch(where, f"{tp.__name__} (an object)")
    hints = typing.get_type_hints(tp)
    given: dict[str, object] = {}
    for field in dataclasses.fields(tp):
        at = f"{where}.{field.name}"
        if field.name in value:
            given[field.name] = convert(value[field.name], hints[field.name], at)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise _Mismatch(at, f"{_name(hints[field.name])} (missing)")
    return tp(**given)


def _model(tp: type, value: object, where: str) -> object:
    try:
        return tp.model_validate(value)  # type: ignore[attr-defined]
    except _Invalid as error:
        first = error.errors(include_url=False, include_input=False)[0]
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise _Mismatch(f"{where}{path}", f"{tp.__name__}: {first['msg']}") from None


def _simple(value: object, tp: type, where: str) -> object:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (datetime, date) and isinstance(value, str):
        try:
            moment = parse_date(value)
        except ValueError:
            raise _Mismatch(where, tp.__name__) from None
        return moment if tp is datetime else moment.date()
    if tp is date and isinstance(value, datetime):
        return value.date()
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise _Mismatch(where, tp.__name__)


def convert(value: object, tp: Any, where: str) -> object:
    """``value`` as ``tp``; :class:`_Mismatch` (where, what was expected) when it does not fit."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if tp is None or tp is type(None):
        if value is None:
            return None
        raise _Mismatch(where, "None")
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return convert(value, option, where)
            except _Mismatch:
                continue
        raise _Mismatch(where, _name(tp))
    if origin in (list, tuple, set, frozenset):
        if not isinstance(value, list | tuple):
            raise _Mismatch(where, _name(tp))
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return origin(convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch(where, _name(tp))
        item = (typing.get_args(tp) or (str, Any))[1]
        return {str(k): convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _fields(tp, value, where)
    if _is_model(tp):
        return _model(tp, value, where)
    if isinstance(tp, type):
        return _simple(value, tp, where)
    return value


def _hints(handler: Callable[..., object], parameters: int) -> dict[str, Any]:
    """The handler's annotations, resolved; a handler taking more than the task whose
    annotations cannot be resolved is a configuration error (else: none, nothing changes)."""
    try:
        return typing.get_type_hints(handler)
    except Exception as error:  # noqa: BLE001 - NameError, TypeError of a user's annotation
        if parameters <= 1:
            return {}
        name = getattr(handler, "__qualname__", repr(handler))
        raise ConfigurationError(
            f"handler {name}: its annotations cannot be resolved ({type(error).__name__}: "
            f"{error}); define the types it names at module level"
        ) from None


def _inputs(
    handler: Callable[..., object], hints: Mapping[str, Any]
) -> list[tuple[str, Any, object]]:
    """The handler's variable parameters: (name, type, default), the annotated ones after
    the task (one without an annotation is left to its default, as before)."""
    parameters = list(inspect.signature(handler).parameters.values())[1:]
    return [
        (p.name, hints[p.name], p.default)
        for p in parameters
        if p.name in hints and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _arguments(task: Task, inputs: list[tuple[str, Any, object]]) -> dict[str, object]:
    arguments: dict[str, object] = {}
    for name, tp, default in inputs:
        if name not in task.variables:
            if default is _MISSING:
                raise InputMismatch(f"variable {name!r} is missing: expected {_name(tp)}")
            continue
        try:
            arguments[name] = convert(task.variables[name], tp, name)
        except _Mismatch as error:
            at = "" if error.where == name else f" at {error.where}"
            raise InputMismatch(
                f"variable {name!r}{at} does not fit: expected {error.expected}"
            ) from None
    return arguments


def _outputs(result: object) -> object:
    """A returned dataclass or model as one variable per field; anything else as it is."""
    if isinstance(result, Complete):
        return result
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {f.name: _plain(getattr(result, f.name)) for f in dataclasses.fields(result)}
    if _Model is not None and isinstance(result, _Model):
        # A field's own value keeps its type (a datetime is sent as a Date); what nests goes
        # as JSON data (a Json variable), dates in it as ISO text.
        python, data = result.model_dump(), result.model_dump(mode="json")
        return {k: data[k] if isinstance(v, dict | list) else v for k, v in python.items()}
    return result


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def typed_handler(handler: Callable[..., object]) -> Callable[[Task], object] | None:
    """A handler taking the task only, converting ``handler``'s typed inputs and output;
    None when ``handler`` has none (it is then called as it is)."""
    try:
        count = len(inspect.signature(handler).parameters)
    except (TypeError, ValueError):
        return None  # a callable without a signature: called as it is
    hints = _hints(handler, count)
    inputs = _inputs(handler, hints)
    returns = hints.get("return")
    if not inputs and not _is_structured(returns):
        return None
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def typed_async(task: Task) -> object:
            return _outputs(await handler(task, **_arguments(task, inputs)))

        return typed_async

    @functools.wraps(handler)
    def typed(task: Task) -> object:
        return _outputs(handler(task, **_arguments(task, inputs)))

    return typed
