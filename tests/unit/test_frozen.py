"""mapping.frozen.quick_init: the faster __init__ builds exactly what the dataclass's
own __init__ would, and the classes stay frozen."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import FrozenInstanceError, dataclass, field
from decimal import Decimal

import pytest

from mapping import billing, domain, money
from mapping.frozen import quick_init

DECORATED = [
    billing.HeldItem,
    billing.RecordItem,
    billing.RecordTransition,
    billing.CreateEntry,
    billing.UpdateEntry,
    billing.ChangeEntryState,
    billing.Skip,
    billing.Conflict,
    domain.BillableEntry,
    domain.ResolvedRate,
    money.Money,
]


def _expected_signature(cls: type) -> list[tuple[str, object]]:
    return [
        (f.name, f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty)
        for f in dataclasses.fields(cls)
    ]


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_the_signature_is_the_dataclass_fields_in_order_with_their_defaults(cls: type) -> None:
    parameters = inspect.signature(cls).parameters.values()
    assert [(p.name, p.default) for p in parameters] == _expected_signature(cls)


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_the_class_is_still_frozen_and_slotted(cls: type) -> None:
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert "__slots__" in vars(cls)


def test_values_are_set_compared_hashed_and_refuse_assignment() -> None:
    entry = domain.BillableEntry(
        "file:web:T1#time-1",
        "file:web:T1",
        domain.EntryKind.TIME,
        1,
        domain.EntryState.READY,
        Decimal("2.5"),
        Decimal(120),
        money.Money(Decimal("300.00"), "EUR"),
    )
    assert entry.description == "" and entry.person is None and entry.cost is None
    again = dataclasses.replace(entry)
    assert again == entry and hash(again) == hash(entry)
    assert dataclasses.replace(entry, hours=Decimal(3)) != entry
    with pytest.raises(FrozenInstanceError):
        entry.hours = Decimal(9)  # type: ignore[misc]
    assert billing.Conflict("same revision") == billing.Conflict("same revision", 0)
    assert billing.Conflict("same revision", 4).revision == 4


def test_post_init_still_runs() -> None:
    assert money.Money(1, "eur") == money.Money(Decimal(1), "EUR")  # type: ignore[arg-type]


def test_a_default_factory_gives_a_new_value_each_time() -> None:
    @quick_init
    @dataclass(frozen=True, slots=True)
    class Basket:
        name: str
        things: list[str] = field(default_factory=list)

    first, second = Basket("a"), Basket("b")
    first.things.append("x")
    assert second.things == [] and Basket("c", ["y"]).things == ["y"]


def test_what_it_cannot_reproduce_is_refused() -> None:
    @dataclass(frozen=True)
    class NotSlotted:
        a: int

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordOnly:
        a: int

    for cls in (NotSlotted, NotFrozen, KeywordOnly):
        with pytest.raises(TypeError, match="quick_init"):
            quick_init(cls)
