"""Hypothesis properties of the billing core and of money."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from mapping.billing import HeldItem, Skip, evolve, plan
from mapping.domain import (
    SETTLED_STATES,
    BoardItem,
    EntryKind,
    EntryState,
    RoundingMode,
    RoundingRule,
)
from mapping.money import KNOWN_CURRENCIES, Money, currency_exponent, stripe_minor_step
from tests.builders import client, policy, snap

COLUMNS = ["Todo", "In progress", "Done"]
hours = st.decimals(min_value=0, max_value=200, places=2, allow_nan=False, allow_infinity=False)
rounding = st.builds(
    RoundingRule,
    st.sampled_from([1, 6, 10, 15, 30, 60]),
    st.sampled_from(list(RoundingMode)),
)


@st.composite
def histories(draw: st.DrawFn, labels: tuple[str, ...] = ()) -> list[BoardItem]:
    moves = draw(st.lists(st.tuples(st.sampled_from(COLUMNS), hours), min_size=1, max_size=12))
    return [snap(c, str(h), i + 1, labels=labels) for i, (c, h) in enumerate(moves)]


def apply(
    held: HeldItem | None, items: list[BoardItem], rule: RoundingRule, invoice: bool = False
) -> HeldItem | None:
    the_policy = policy(client=client(rounding=rule))
    for item in items:
        held = evolve(held, plan(item, held, the_policy))
        if invoice and held is not None:
            # Finance approves and Stripe finalizes everything ready, as soon as it is.
            held = replace(
                held,
                entries=tuple(
                    replace(e, state=EntryState.INVOICED) if e.state is EntryState.READY else e
                    for e in held.entries
                ),
            )
    return held


@settings(max_examples=200, deadline=None)
@given(history=histories(), rule=rounding, replay=st.data())
def test_billing_the_same_snapshots_again_in_any_order_changes_nothing(
    history: list[BoardItem], rule: RoundingRule, replay: st.DataObject
) -> None:
    held = apply(None, history, rule)
    again = replay.draw(st.lists(st.sampled_from(history), max_size=30))
    the_policy = policy(client=client(rounding=rule))
    for item in again:
        actions = plan(item, held, the_policy)
        assert len(actions) == 1 and isinstance(actions[0], Skip)


@settings(max_examples=300, deadline=None)
@given(history=histories(), rule=rounding, invoice=st.booleans())
def test_total_billed_hours_equal_rounding_of_hours_at_last_done(
    history: list[BoardItem], rule: RoundingRule, invoice: bool
) -> None:
    held = apply(None, history, rule, invoice=invoice)
    done = [s for s in history if s.column == "Done"]
    expected = rule.apply(done[-1].tracked_hours) if done else Decimal(0)
    total = sum(
        (
            e.hours
            for e in (held.entries if held else ())
            if e.kind in (EntryKind.TIME, EntryKind.ADJUSTMENT) and e.state in SETTLED_STATES
        ),
        Decimal(0),
    )
    assert total == expected
    # Money always equals hours x the rate frozen on each line.
    for e in held.entries if held else ():
        if e.amount is not None and e.rate is not None:
            assert e.amount.amount == (e.hours * e.rate).quantize(Decimal("0.01"))


@settings(max_examples=200, deadline=None)
@given(history=histories(labels=("internal",)), rule=rounding)
def test_non_billable_items_never_produce_a_billable_amount(
    history: list[BoardItem], rule: RoundingRule
) -> None:
    held = apply(None, history, rule)
    for e in held.entries if held else ():
        assert e.kind is EntryKind.COST
        assert e.state is EntryState.NON_BILLABLE
        assert e.amount is None


currencies = st.sampled_from(sorted(KNOWN_CURRENCIES))


@given(minor=st.integers(min_value=-(10**12), max_value=10**12), currency=currencies)
def test_minor_units_round_trip(minor: int, currency: str) -> None:
    # Every amount Stripe accepts (three-decimal currencies: multiples of ten) round-trips.
    minor *= stripe_minor_step(currency)
    assert Money.from_minor_units(minor, currency).to_minor_units() == minor


@given(data=st.data(), currency=currencies)
def test_amounts_at_the_currency_precision_round_trip(data: st.DataObject, currency: str) -> None:
    places = currency_exponent(currency)
    amount = data.draw(
        st.decimals(
            min_value=-(10**9),
            max_value=10**9,
            places=places,
            allow_nan=False,
            allow_infinity=False,
        )
    )
    money = Money(amount, currency)
    if stripe_minor_step(currency) == 1:
        assert Money.from_minor_units(money.to_minor_units(), currency).amount == amount
    # In every currency, what is sent is what the ledger holds after rounding.
    sent = Money.from_minor_units(money.to_minor_units(), currency)
    assert sent == money.quantized()
    assert money.to_minor_units() % stripe_minor_step(currency) == 0
