"""Money as Decimal plus an ISO 4217 currency, and conversion to integer minor units.

Stripe takes amounts in the currency's smallest unit (cents for EUR, yen for JPY,
fils for KWD); the domain keeps `Decimal` so nothing is lost before that edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from mapping.frozen import quick_init

# Exponent (digits after the decimal point) of every currency Stripe supports that is
# not the common 2. Everything else in KNOWN_CURRENCIES has exponent 2.
_EXPONENT_ZERO = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()
)
_EXPONENT_THREE = frozenset("BHD JOD KWD OMR TND".split())
_EXPONENT_TWO = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BWP
    BYN BZD CAD CDF CHF CNY COP CRC CVE CZK DKK DOP DZD EGP ETB EUR FJD FKP GBP GEL
    GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR ISK JMD KES KGS KHR KYD KZT LAK LBP
    LKR LRD LSL MAD MDL MKD MMK MNT MOP MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR
    NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SEK SGD SHP SLE SOS SRD
    STD SZL THB TJS TOP TRY TTD TWD TZS UAH USD UYU UZS WST XCD YER ZAR ZMW""".split()
)
KNOWN_CURRENCIES = _EXPONENT_ZERO | _EXPONENT_TWO | _EXPONENT_THREE


def tidy_decimal(value: Decimal) -> Decimal:
    """Trailing zeros dropped without scientific notation (100.000000 -> 100, 1.50 -> 1.5)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


class UnknownCurrencyError(ValueError):
    """The currency code is not an ISO 4217 code this system can bill in."""


def normalize_currency(code: str) -> str:
    """Upper-cased ISO code, or `UnknownCurrencyError` naming the bad value."""
    if code in KNOWN_CURRENCIES and type(code) is str:
        return code  # already normalized (every Money after the first)
    upper = code.strip().upper()
    if upper not in KNOWN_CURRENCIES:
        raise UnknownCurrencyError(
            f"unknown currency {code!r}: expected an ISO 4217 code such as EUR"
        )
    return upper


def currency_exponent(code: str) -> int:
    upper = normalize_currency(code)
    if upper in _EXPONENT_ZERO:
        return 0
    if upper in _EXPONENT_THREE:
        return 3
    return 2


def stripe_minor_step(code: str) -> int:
    """The step, in minor units, of the amounts Stripe accepts: 10 for the
    three-decimal currencies (the last digit must be 0), 1 for all others."""
    return 10 if normalize_currency(code) in _EXPONENT_THREE else 1


# The smallest unit for each exponent: Decimal(1).scaleb(-exponent).
_SMALLEST_UNIT = {0: Decimal(1), 2: Decimal("0.01"), 3: Decimal("0.001")}
# The smallest unit of each currency whose Stripe step is one minor unit (all but the
# three-decimal ones): the common case of `rounded_money`, one dict lookup.
_UNIT_OF = {
    **dict.fromkeys(_EXPONENT_ZERO, _SMALLEST_UNIT[0]),
    **dict.fromkeys(_EXPONENT_TWO, _SMALLEST_UNIT[2]),
}


@quick_init
@dataclass(frozen=True, slots=True)
class Money:
    """An amount in one currency. Arithmetic refuses to mix currencies."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        currency = self.currency
        if currency not in KNOWN_CURRENCIES or type(currency) is not str:
            object.__setattr__(self, "currency", normalize_currency(currency))
        if not isinstance(self.amount, Decimal):
            object.__setattr__(self, "amount", Decimal(str(self.amount)))

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)

    @property
    def exponent(self) -> int:
        return currency_exponent(self.currency)

    def quantized(self) -> Money:
        """Rounded to the smallest amount Stripe can charge in the currency.

        Half-up, away from zero on a tie (-0.005 EUR -> -0.01), to the currency's minor
        unit; for the three-decimal currencies (BHD, JOD, KWD, OMR, TND) to the nearest
        ten minor units, because Stripe refuses an amount whose last digit is not 0
        (5.124 KWD -> 5.120, 5.125 KWD -> 5.130). The result keeps the currency's
        exponent (5.120, not 5.12), so every view shows the same digits. Every amount
        the billing core and the approval desk compute goes through here, so the ledger
        holds exactly what Stripe is sent.
        """
        return rounded_money(self.amount, self.currency)

    def to_minor_units(self) -> int:
        """Integer amount in the smallest unit, e.g. EUR 12.34 -> 1234, JPY 500 -> 500."""
        return int(self.quantized().amount.scaleb(self.exponent))

    @classmethod
    def from_minor_units(cls, minor: int, currency: str) -> Money:
        exponent = currency_exponent(currency)
        return cls(Decimal(minor).scaleb(-exponent), currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def __str__(self) -> str:
        step = _SMALLEST_UNIT[currency_exponent(self.currency)]
        return f"{self.amount.quantize(step, rounding=ROUND_HALF_UP):,} {self.currency}"


def rounded_money(amount: Decimal, currency: str) -> Money:
    """`Money(amount, currency).quantized()`, building one Money instead of two (the
    billing core prices every line through here). Same rounding: see `Money.quantized`."""
    exact = _UNIT_OF.get(currency)
    if exact is not None and isinstance(amount, Decimal):
        return Money(amount.quantize(exact, rounding=ROUND_HALF_UP), currency)
    money = Money(amount, currency)  # normalizes the currency (or refuses it)
    amount, currency = money.amount, money.currency
    exact = _SMALLEST_UNIT[currency_exponent(currency)]
    if stripe_minor_step(currency) == 1:
        return Money(amount.quantize(exact, rounding=ROUND_HALF_UP), currency)
    step = exact * 10
    whole = (amount / step).quantize(Decimal(1), rounding=ROUND_HALF_UP) * step
    return Money(whole.quantize(exact), currency)
