"""Money and minor units, with the currency's exponent."""

from __future__ import annotations

from decimal import Decimal

import pytest

from mapping.money import Money, UnknownCurrencyError, currency_exponent


@pytest.mark.parametrize(
    ("currency", "exponent", "amount", "minor"),
    [
        ("EUR", 2, "12.34", 1234),
        ("usd", 2, "0.005", 1),  # half up at the smallest unit
        ("JPY", 0, "500", 500),
        ("JPY", 0, "499.5", 500),
        ("CLP", 0, "1000", 1000),
        ("EUR", 2, "-0.005", -1),  # a tie rounds away from zero, for credits too
        # three-decimal currencies: Stripe wants the last digit 0 (nearest ten, tie up)
        ("KWD", 3, "5.124", 5120),
        ("KWD", 3, "5.125", 5130),
        ("KWD", 3, "-5.125", -5130),
        ("KWD", 3, "1.2345", 1230),
        ("KWD", 3, "46.666", 46670),  # the line Stripe refused as 46666
        ("BHD", 3, "0.001", 0),
        ("JOD", 3, "0.005", 10),
        ("OMR", 3, "12.995", 13000),
        ("TND", 3, "0.014999", 10),
    ],
)
def test_minor_units_follow_the_currency_exponent(
    currency: str, exponent: int, amount: str, minor: int
) -> None:
    assert currency_exponent(currency) == exponent
    assert Money(Decimal(amount), currency).to_minor_units() == minor


def test_unknown_currency_is_refused_with_its_name() -> None:
    with pytest.raises(UnknownCurrencyError, match="'EUX'"):
        Money(Decimal(1), "EUX")


def test_currencies_do_not_mix() -> None:
    with pytest.raises(ValueError, match="EUR with USD"):
        Money(Decimal(1), "EUR") + Money(Decimal(1), "USD")


def test_display() -> None:
    assert str(Money(Decimal("1234.5"), "EUR")) == "1,234.50 EUR"
    assert str(Money(Decimal("120000"), "JPY")) == "120,000 JPY"


def test_three_decimal_amounts_keep_three_digits_for_display() -> None:
    quantized = Money(Decimal("5.124"), "KWD").quantized()
    assert str(quantized.amount) == "5.120"
    assert str(quantized) == "5.120 KWD"
    assert Money.from_minor_units(quantized.to_minor_units(), "KWD") == quantized
