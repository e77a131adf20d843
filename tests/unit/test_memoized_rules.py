"""Issue 15: the memoized pure rules give exactly what computing again gives, down to
the Decimal's representation (a memo keyed by value must not hand 2.50 for 2.5 where
the digits would differ), and the plain-rate path of `resolve_rate` agrees with the
precedence the rules path applies."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from mapping.domain import RateScope, ResolvedRate, RoundingMode, RoundingRule, _rounded_hours
from mapping.money import KNOWN_CURRENCIES, Money, rounded_money
from mapping.rules import resolve_rate
from mapping.stripe_lines import _line_amount, line_amount
from sync.ledger import bulk
from sync.ledger.schema import to_scaled
from tests.builders import client, policy, snap

amounts = st.decimals(min_value=-10_000, max_value=10_000, places=4, allow_nan=False)
positive = st.decimals(min_value="0.0001", max_value=500, places=4, allow_nan=False)
currencies = st.sampled_from(sorted(KNOWN_CURRENCIES))


def _same(a: Decimal, b: Decimal) -> bool:
    return a == b and str(a) == str(b)


@given(positive, st.sampled_from([1, 6, 10, 15, 30, 60]), st.sampled_from(list(RoundingMode)))
def test_memoized_rounding_equals_computing_again(
    hours: Decimal, increment: int, mode: RoundingMode
) -> None:
    cached = RoundingRule(increment, mode).apply(hours)
    again = _rounded_hours.__wrapped__(hours, increment, mode)
    assert _same(cached, again)
    # An equal value written with other digits rounds to the same representation.
    assert _same(RoundingRule(increment, mode).apply(Decimal(f"{hours}00")), again)


@given(amounts, amounts, currencies)
def test_line_amounts_equal_the_two_step_rounding(
    hours: Decimal, rate: Decimal, currency: str
) -> None:
    expected = Money(hours * rate, currency).quantized()
    for got in (
        line_amount(hours, rate, currency),
        line_amount(Decimal(f"{hours}0"), rate, currency),  # same value, other digits
        rounded_money(hours * rate, currency),
    ):
        assert got is not None
        assert got == expected and str(got.amount) == str(expected.amount)
    if hours and rate:
        assert _line_amount.__wrapped__(hours, rate, currency) == expected


def test_a_zero_line_keeps_its_sign() -> None:
    assert str(line_amount(Decimal("-0"), Decimal(120), "EUR").amount) == "-0.00"  # type: ignore[union-attr]
    assert str(line_amount(Decimal("0"), Decimal(120), "EUR").amount) == "0.00"  # type: ignore[union-attr]


@given(amounts)
def test_memoized_scaled_values_equal_to_scaled(value: Decimal) -> None:
    assert bulk._scaled(value) == to_scaled(value)
    assert bulk._scaled(Decimal(f"{value}0")) == to_scaled(value)


def test_plain_rates_resolve_in_the_documented_precedence() -> None:
    item = snap("Done", "2", 1)
    on = date(2026, 11, 2)
    board_rate = policy(rate=Decimal(140))
    assert resolve_rate(item, board_rate, on) == ResolvedRate(Decimal(140), RateScope.BOARD)
    assert resolve_rate(item, policy(), on) == ResolvedRate(Decimal(100), RateScope.CLIENT)
    default_only = policy(client=client(rate=None), default_rate=Decimal(70))
    assert resolve_rate(item, default_only, on) == ResolvedRate(Decimal(70), RateScope.DEFAULT)
    assert resolve_rate(item, policy(client=client(rate=None)), on) is None
    # An item's own rate still wins.
    priced = snap("Done", "2", 1, rate="95")
    assert resolve_rate(priced, board_rate, on) == ResolvedRate(Decimal(95), RateScope.ITEM)
