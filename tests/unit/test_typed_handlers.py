"""Typed handler inputs and outputs (camunda_relay.typed): conversion before the handler runs,
the failure that names the variable and the type but never the value, dataclasses and
pydantic models out, and nothing changed for a handler without annotations."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pytest
from pydantic import BaseModel

from camunda_relay import Complete, ConfigurationError, Router, Task
from camunda_relay.testing import make_task, run_handlers_sync
from camunda_relay.typed import InputMismatch, typed_handler


@dataclass
class Line:
    sku: str
    qty: int


@dataclass
class Order:
    id: int
    lines: list[Line]
    note: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Receipt:
    total: float
    paid: bool
    order: Order | None = None


class Customer(BaseModel):
    name: str
    since: date


class Invoice(BaseModel):
    number: int
    customer: Customer


ORDER = {"id": 7, "lines": [{"sku": "a", "qty": 2}]}


def call(handler: object, variables: dict[str, object]) -> object:
    wrapped = typed_handler(handler)  # type: ignore[arg-type]
    assert wrapped is not None
    return wrapped(make_task("t", variables))


def test_a_dataclass_parameter_is_built_from_its_json_variable() -> None:
    seen: list[Order] = []

    def handle(task: Task, order: Order, amount: float) -> None:
        seen.append(order)
        assert amount == 3.0

    call(handle, {"order": ORDER, "amount": 3})
    assert seen == [Order(id=7, lines=[Line("a", 2)])]


def test_a_returned_dataclass_becomes_one_variable_per_field() -> None:
    def handle(task: Task, order: Order) -> Receipt:
        return Receipt(total=9.5, paid=True, order=order)

    assert call(handle, {"order": ORDER}) == {
        "total": 9.5,
        "paid": True,
        "order": {"id": 7, "lines": [{"sku": "a", "qty": 2}], "note": None, "tags": []},
    }


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({}, "variable 'order' is missing: expected Order"),
        ({"order": "s3cr3t"}, "variable 'order' does not fit: expected Order (an object)"),
        (
            {"order": {"id": "s3cr3t", "lines": []}},
            "variable 'order' at order.id does not fit: expected int",
        ),
        (
            {"order": {"id": 1, "lines": [{"sku": "a", "qty": True}]}},
            "variable 'order' at order.lines[0].qty does not fit: expected int",
        ),
        ({"order": {"id": 1}}, "variable 'order' at order.lines does not fit: expected list"),
    ],
)
def test_a_missing_or_ill_typed_variable_names_it_and_the_type_never_the_value(
    variables: dict[str, object], message: str
) -> None:
    def handle(task: Task, order: Order) -> None:
        raise AssertionError("not called")

    with pytest.raises(InputMismatch) as raised:
        call(handle, variables)
    assert str(raised.value).startswith(message)
    assert "s3cr3t" not in str(raised.value)
    assert raised.value.retries == 0  # retrying does not change the variables: an incident


def test_defaults_unions_and_dates() -> None:
    seen: list[tuple[object, ...]] = []

    def handle(
        task: Task, when: datetime, day: date, count: int | None, note: str = "none"
    ) -> None:
        seen.append((when, day, count, note))

    moment = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    call(handle, {"when": moment, "day": "2026-01-02T00:00:00.000+0000", "count": None})
    assert seen == [(moment, date(2026, 1, 2), None, "none")]


def test_pydantic_models_in_and_out_without_the_value_in_the_error() -> None:
    def handle(task: Task, customer: Customer) -> Invoice:
        return Invoice(number=1, customer=customer)

    out = call(handle, {"customer": {"name": "Ada", "since": "2020-01-01"}})
    assert out == {"number": 1, "customer": {"name": "Ada", "since": "2020-01-01"}}
    with pytest.raises(InputMismatch) as raised:
        call(handle, {"customer": {"name": "Ada", "since": "s3cr3t"}})
    assert str(raised.value).startswith("variable 'customer' at customer.since does not fit")
    assert "s3cr3t" not in str(raised.value)


def test_without_annotations_nothing_changes() -> None:
    def plain(task: Task) -> dict[str, object]:
        return {}

    def untyped(task):  # type: ignore[no-untyped-def]
        return {}

    def completes(task: Task) -> Complete:
        return Complete(variables={"a": 1})

    def wrapper(task: Task, *args: object, **kwargs: object) -> None: ...

    def defaulted(task, retries=3):  # type: ignore[no-untyped-def]
        return {"retries": retries}

    assert typed_handler(plain) is None
    assert typed_handler(untyped) is None
    assert typed_handler(completes) is None
    assert typed_handler(wrapper) is None
    assert typed_handler(defaulted) is None
    router = Router()
    router.task("t")(plain)
    assert router["t"].handler is plain


def test_through_the_router_a_bad_input_is_a_reported_failure() -> None:
    router = Router()

    @router.task("t")
    async def handle(task: Task, order: Order) -> Receipt:
        return Receipt(total=len(order.lines), paid=False)

    ok, bad = run_handlers_sync(router, [make_task("t", {"order": ORDER}), make_task("t", {})])
    assert (ok.kind, ok.variables) == ("completed", {"total": 1.0, "paid": False, "order": None})
    assert bad.kind == "failed"
    assert "variable 'order' is missing: expected Order" in str(bad.error)


def test_annotations_that_cannot_be_resolved_are_refused_at_registration() -> None:
    @dataclass
    class Local:  # not resolvable from the module: the annotation is a string
        x: int

    def handle(task: Task, value: Local) -> None: ...

    with pytest.raises(ConfigurationError, match="annotations cannot be resolved"):
        Router().task("t")(handle)
