"""Stripe's published limits on what kanvoice writes, as pure functions.

- amounts: see `Money.quantized` (three-decimal currencies in steps of ten minor units);
- the minimum charge per currency: Stripe marks an invoice whose amount due is below it
  as paid and moves the amount to the customer's credit balance, so such a draft must
  not be finalized unless finance forces it;
- at most 250 invoice items per invoice;
- description at most 500 characters; metadata at most 50 keys, keys at most 40 and
  values at most 500 characters.

No I/O, no clock: the writer, the approval desk and the fake Stripe all read these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from mapping.money import Money, normalize_currency, stripe_minor_step

MAX_INVOICE_ITEMS = 250
MAX_DESCRIPTION = 500
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500

# Stripe's minimum charge amounts, in major units, as published in "Minimum and maximum
# charge amounts" on https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts
# (checked 2026-12-03: all 24 rows below match the page, none needed correcting).
# Stripe states them per *settlement* currency (the currency of the bank account the
# payout goes to); kanvoice applies the invoice currency's row, which is the same figure
# when a client is invoiced in the currency it is paid out in. A charge converted into
# another settlement currency must reach that currency's minimum after conversion, which
# kanvoice cannot know (it has no exchange rates).
_PUBLISHED_MINIMUM: Mapping[str, Decimal] = {
    code: Decimal(value)
    for code, value in {
        "USD": "0.50",
        "AED": "2.00",
        "AUD": "0.50",
        "BGN": "1.00",
        "BRL": "0.50",
        "CAD": "0.50",
        "CHF": "0.50",
        "CZK": "15.00",
        "DKK": "2.50",
        "EUR": "0.50",
        "GBP": "0.30",
        "HKD": "4.00",
        "HUF": "175.00",
        "INR": "0.50",
        "JPY": "50",
        "MXN": "10",
        "MYR": "2",
        "NOK": "3.00",
        "NZD": "0.50",
        "PLN": "2.00",
        "RON": "2.00",
        "SEK": "3.00",
        "SGD": "0.50",
        "THB": "10",
    }.items()
}
# Not in Stripe's table: the three-decimal currencies, which are presentment currencies
# only (paid out in another currency, so their minimum is that currency's after
# conversion). kanvoice's own conservative estimates, about 0.55 USD or more, in steps of
# ten minor units (Stripe's rule for these currencies). Every other currency: any
# positive amount.
_ESTIMATED_MINIMUM: Mapping[str, Decimal] = {
    code: Decimal(value)
    for code, value in {
        "BHD": "0.210",
        "JOD": "0.400",
        "KWD": "0.170",
        "OMR": "0.220",
        "TND": "1.700",
    }.items()
}
_MINIMUM_CHARGE: Mapping[str, Decimal] = {**_PUBLISHED_MINIMUM, **_ESTIMATED_MINIMUM}


def minimum_charge(currency: str) -> Money:
    """The smallest invoice total Stripe collects in `currency` (one minor step when
    Stripe publishes no figure for it)."""
    code = normalize_currency(currency)
    known = _MINIMUM_CHARGE.get(code)
    if known is not None:
        return Money(known, code).quantized()
    return Money.from_minor_units(stripe_minor_step(code), code)


@dataclass(frozen=True, slots=True)
class ChargeCheck:
    """Whether a draft total can be finalized as a charge, and why not."""

    total: Money
    minimum: Money

    @property
    def below_minimum(self) -> bool:
        return self.total.quantized().amount < self.minimum.amount

    @property
    def reason(self) -> str:
        """What approval tells finance when the total is under Stripe's minimum."""
        return (
            f"total {self.total} is below Stripe's minimum charge of {self.minimum}: "
            "Stripe would mark the invoice paid and move the amount to the customer's "
            "credit balance. The lines stay queued for the next invoice; force the "
            "approval to send it anyway"
        )


def check_charge(total: Money) -> ChargeCheck:
    """Compare an invoice total with Stripe's minimum charge for its currency."""
    return ChargeCheck(total.quantized(), minimum_charge(total.currency))


def invoice_capacity(lines_on_invoice: int) -> int:
    """How many more invoice items fit on an invoice that already has this many."""
    return max(0, MAX_INVOICE_ITEMS - lines_on_invoice)


def fit_description(text: str, keep: str = "", limit: int = MAX_DESCRIPTION) -> str:
    """`text` followed by `keep`, at most `limit` characters: the free text is cut
    (with an ellipsis) so that `keep` (the reference and the hours × rate that say
    what the money is for) stays whole. `keep` alone over the limit is cut at its end."""
    if len(text) + len(keep) <= limit:
        return text + keep
    if len(keep) >= limit:
        return keep[:limit]
    room = limit - len(keep)
    cut = text[: max(0, room - 1)].rstrip()
    return (cut + "…" if room > 0 else "") + keep


def fit_metadata_value(value: str) -> str:
    """A value within Stripe's 500 characters. An identifying value too long to fit is
    shortened to a prefix plus a digest of the whole, so it stays unique and the same
    value always maps to the same text (searches compare with this form)."""
    if len(value) <= MAX_METADATA_VALUE:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return value[: MAX_METADATA_VALUE - len(digest) - 1] + "~" + digest


def fit_metadata(
    entries: Mapping[str, str], required: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Metadata within Stripe's limits (50 keys, key ≤ 40, value ≤ 500 characters).

    Required keys (the ones the writer searches by) come first and are never dropped or
    renamed; their values are shortened by `fit_metadata_value` only if over 500. Other
    keys are cut to 40 characters (a cut that collides with a kept key is dropped), their
    values to 500, and those beyond the 50th key are dropped in their given order.
    Empty values are dropped (Stripe reads an empty value as "delete this key").
    """
    for key in required:
        if len(key) > MAX_METADATA_KEY:
            raise ValueError(f"required metadata key {key!r} is over {MAX_METADATA_KEY}")
    fitted: dict[str, str] = {}
    ordered = [k for k in entries if k in required] + [k for k in entries if k not in required]
    for key in ordered:
        value = entries[key]
        if value == "":
            continue
        if key in required:
            fitted[key] = fit_metadata_value(value)
            continue
        if len(fitted) >= MAX_METADATA_KEYS:
            break
        short = key[:MAX_METADATA_KEY]
        if short in fitted:
            continue
        fitted[short] = value[:MAX_METADATA_VALUE]
    return fitted
