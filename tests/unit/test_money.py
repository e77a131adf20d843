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
        ("KWD", 3, "1.2345", 1235),
        ("BHD", 3, "0.001", 1),
        ("CLP", 0, "1000", 1000),
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
