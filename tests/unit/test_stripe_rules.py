"""Stripe's published rules, on the pure core: amounts per currency class, the minimum
charge, 250 items per invoice, and the limits of the fields kanvoice writes."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapping.billing import HeldItem, evolve, plan
from mapping.domain import BoardItem, EntryKind, EntryState, RoundingMode, RoundingRule
from mapping.money import Money, stripe_minor_step
from mapping.stripe_rules import (
    MAX_INVOICE_ITEMS,
    check_charge,
    fit_description,
    fit_metadata,
    fit_metadata_value,
    invoice_capacity,
    minimum_charge,
)
from tests.builders import client, policy, snap


def held_after(
    snapshots: list[BoardItem], currency: str, rate: str, invoiced: bool = False
) -> HeldItem:
    the_policy = policy(client=client(currency=currency, rate=rate))
    held: HeldItem | None = None
    for item in snapshots:
        held = evolve(held, plan(item, held, the_policy))
        if invoiced and held is not None:
            held = replace(
                held,
                entries=tuple(
                    replace(e, state=EntryState.INVOICED) if e.state is EntryState.READY else e
                    for e in held.entries
                ),
            )
    assert held is not None
    return held


# --- rule 1: every amount is one Stripe accepts, in every currency class ---------------

AMOUNT_CASES = [
    # (currency, rate, hours at Done, expected amount of the ready T&M line)
    pytest.param("KWD", "14.0", "3.3333", "46.670", id="KWD: 46.6662 -> 46.670, not 46666 fils"),
    pytest.param("KWD", "5.124", "1", "5.120", id="KWD: 5.124 -> 5.120 (nearest ten)"),
    pytest.param("BHD", "5.125", "1", "5.130", id="BHD: tie 5.125 -> 5.130 (half up)"),
    pytest.param("JOD", "0.333", "1", "0.330", id="JOD"),
    pytest.param("OMR", "10.0", "0.5", "5.000", id="OMR"),
    pytest.param("TND", "7.777", "1", "7.780", id="TND"),
    pytest.param("JPY", "8333", "1.5", "12500", id="JPY: zero-decimal, half up"),
    pytest.param("KRW", "12345", "0.5", "6173", id="KRW: zero-decimal"),
    pytest.param("EUR", "33.333", "1", "33.33", id="EUR: two-decimal"),
    pytest.param("USD", "0.125", "1", "0.13", id="USD: tie half up"),
]


@pytest.mark.parametrize(("currency", "rate", "hours", "amount"), AMOUNT_CASES)
def test_time_lines_are_rounded_to_what_stripe_accepts(
    currency: str, rate: str, hours: str, amount: str
) -> None:
    held = held_after([snap("Done", hours, 1)], currency, rate)
    (entry,) = [e for e in held.entries if e.kind is EntryKind.TIME]
    assert entry.amount is not None
    assert str(entry.amount.amount) == amount
    assert entry.amount.to_minor_units() % stripe_minor_step(currency) == 0


@pytest.mark.parametrize(
    ("currency", "milestone", "amount"),
    [
        ("KWD", "1234.5678", "1234.570"),
        ("BHD", "0.005", "0.010"),
        ("JPY", "99999.5", "100000"),
        ("EUR", "1999.995", "2000.00"),
    ],
)
def test_milestones_are_rounded_to_what_stripe_accepts(
    currency: str, milestone: str, amount: str
) -> None:
    held = held_after(
        [snap("Done", "2", 1, labels=("fixed-price",), milestone=milestone)], currency, "1"
    )
    (entry,) = [e for e in held.entries if e.kind is EntryKind.MILESTONE]
    assert entry.amount is not None and str(entry.amount.amount) == amount


@pytest.mark.parametrize(
    ("currency", "rate", "amount"),
    [("KWD", "3.333", "-6.670"), ("JPY", "3333.5", "-6667"), ("EUR", "3.333", "-6.67")],
)
def test_negative_review_adjustments_are_rounded_away_from_zero(
    currency: str, rate: str, amount: str
) -> None:
    # 5 h invoiced, then lowered to 3 h: a -2 h adjustment for review.
    held = held_after([snap("Done", "5", 1), snap("Done", "3", 2)], currency, rate, invoiced=True)
    (adjustment,) = [e for e in held.entries if e.kind is EntryKind.ADJUSTMENT]
    assert adjustment.state is EntryState.NEEDS_REVIEW
    assert adjustment.amount is not None and str(adjustment.amount.amount) == amount


# --- rule 3: the minimum charge ----------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "total", "below"),
    [
        ("USD", "0.49", True),
        ("USD", "0.50", False),
        ("EUR", "0.499", False),  # rounds to 0.50 first, which Stripe charges
        ("GBP", "0.29", True),
        ("GBP", "0.30", False),
        ("JPY", "49", True),
        ("JPY", "50", False),
        ("KWD", "0.160", True),
        ("KWD", "0.170", False),
        ("HUF", "174.99", True),
        ("KRW", "1", False),  # no published minimum: any positive amount
        ("KRW", "0", True),
        ("EUR", "0", True),
    ],
)
def test_totals_under_stripes_minimum_charge_are_flagged(
    currency: str, total: str, below: bool
) -> None:
    check = check_charge(Money(Decimal(total), currency))
    assert check.below_minimum is below
    if below:
        assert "minimum charge" in check.reason and str(check.minimum) in check.reason


# Stripe's table "Minimum and maximum charge amounts" as published on
# https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts (read 2026-12-03),
# in the minor units Stripe's API takes.
STRIPE_PUBLISHED_MINIMUM_MINOR = {
    "USD": 50,
    "AED": 200,
    "AUD": 50,
    "BGN": 100,
    "BRL": 50,
    "CAD": 50,
    "CHF": 50,
    "CZK": 1500,
    "DKK": 250,
    "EUR": 50,
    "GBP": 30,
    "HKD": 400,
    "HUF": 17500,
    "INR": 50,
    "JPY": 50,
    "MXN": 1000,
    "MYR": 200,
    "NOK": 300,
    "NZD": 50,
    "PLN": 200,
    "RON": 200,
    "SEK": 300,
    "SGD": 50,
    "THB": 1000,
}


@pytest.mark.parametrize(("currency", "minor"), sorted(STRIPE_PUBLISHED_MINIMUM_MINOR.items()))
def test_minimum_charges_are_stripes_published_figures(currency: str, minor: int) -> None:
    assert minimum_charge(currency.lower()).to_minor_units() == minor


def test_minimum_charges_in_major_units() -> None:
    assert str(minimum_charge("usd")) == "0.50 USD"
    assert str(minimum_charge("GBP")) == "0.30 GBP"
    assert str(minimum_charge("HUF")) == "175.00 HUF"
    assert str(minimum_charge("JPY")) == "50 JPY"


@pytest.mark.parametrize("currency", ["BHD", "JOD", "KWD", "OMR", "TND"])
def test_three_decimal_minimums_are_estimates_stripe_can_charge(currency: str) -> None:
    """Not in Stripe's table: kanvoice's estimate, in steps of ten minor units."""
    assert currency not in STRIPE_PUBLISHED_MINIMUM_MINOR
    minimum = minimum_charge(currency)
    assert minimum.exponent == 3 and minimum.to_minor_units() % 10 == 0


# --- rule 4: 250 invoice items per invoice ------------------------------------------------


@pytest.mark.parametrize(("on_invoice", "room"), [(0, 250), (249, 1), (250, 0), (400, 0)])
def test_an_invoice_holds_at_most_250_items(on_invoice: int, room: int) -> None:
    assert MAX_INVOICE_ITEMS == 250
    assert invoice_capacity(on_invoice) == room


# --- rule 5: field limits -----------------------------------------------------------------


def test_a_long_title_is_cut_and_the_reference_kept_whole() -> None:
    keep = " [web 7] 2 h × 100.00 EUR https://example.test/7"
    text = fit_description("T" * 1000, keep)
    assert len(text) == 500
    assert text.endswith("…" + keep)
    assert fit_description("short", keep) == "short" + keep
    assert fit_description("x", "k" * 600) == "k" * 500


def test_metadata_keeps_the_entry_keys_intact_within_stripes_limits() -> None:
    entry = "file:web:7#time-1"
    metadata = {f"extra_{i:02d}_{'k' * 40}": "v" * 600 for i in range(60)}
    metadata["kanvoice_entry"] = entry
    metadata["kanvoice_invoice"] = "ledger:3"
    fitted = fit_metadata(metadata, frozenset({"kanvoice_entry", "kanvoice_invoice"}))
    assert len(fitted) == 50
    assert fitted["kanvoice_entry"] == entry
    assert fitted["kanvoice_invoice"] == "ledger:3"
    assert all(len(k) <= 40 and len(v) <= 500 for k, v in fitted.items())


def test_an_identifying_value_over_500_stays_unique_and_stable() -> None:
    long_a, long_b = "a" * 600 + "1", "a" * 600 + "2"
    assert len(fit_metadata_value(long_a)) == 500
    assert fit_metadata_value(long_a) != fit_metadata_value(long_b)
    assert fit_metadata_value(long_a) == fit_metadata_value(long_a)
    fitted = fit_metadata({"kanvoice_entry": long_a}, frozenset({"kanvoice_entry"}))
    assert fitted["kanvoice_entry"] == fit_metadata_value(long_a)


def test_empty_metadata_values_are_not_sent() -> None:
    assert fit_metadata({"rate": "", "hours": "2"}) == {"hours": "2"}


# --- property: Stripe's lines add up to the ledger, and Stripe accepts each --------------

CURRENCIES = ["KWD", "BHD", "TND", "JPY", "KRW", "EUR", "USD", "GBP"]
COLUMNS = ["Todo", "In progress", "Done"]
step = st.tuples(
    st.sampled_from(COLUMNS),
    st.decimals(min_value=0, max_value=80, places=4, allow_nan=False, allow_infinity=False),
    st.sampled_from([None, "7.123", "95", "120.555", "0.333"]),  # item rate changes
    st.sampled_from(["none", "draft", "finalize", "void"]),  # what finance/Stripe do next
)


@settings(max_examples=150, deadline=None)
@given(
    currency=st.sampled_from(CURRENCIES),
    moves=st.lists(step, min_size=1, max_size=14),
    rule=st.builds(
        RoundingRule, st.sampled_from([1, 6, 15, 60]), st.sampled_from(list(RoundingMode))
    ),
    rate=st.sampled_from(["14.0", "100", "33.333", "8333"]),
)
def test_stripe_lines_add_up_to_the_ledger_in_every_currency(
    currency: str,
    moves: list[tuple[str, Decimal, str | None, str]],
    rule: RoundingRule,
    rate: str,
) -> None:
    the_policy = policy(client=client(currency=currency, rate=rate, rounding=rule))
    held: HeldItem | None = None
    # What the fake Stripe would hold: entry key -> amount in minor units, per invoice.
    on_stripe: dict[str, int] = {}
    finalized: dict[str, int] = {}
    for revision, (column, hours, item_rate, then) in enumerate(moves, start=1):
        item = snap(column, str(hours), revision, rate=item_rate)
        held = evolve(held, plan(item, held, the_policy))
        assert held is not None
        entries = []
        for e in held.entries:
            if then == "draft" and e.state is EntryState.READY:
                e = replace(e, state=EntryState.DRAFTED)
            elif then == "finalize" and e.state is EntryState.DRAFTED:
                e = replace(e, state=EntryState.INVOICED)
            elif then == "void" and e.state is EntryState.INVOICED:
                e = replace(e, state=EntryState.READY)  # a voided invoice returns its lines
            entries.append(e)
        held = replace(held, entries=tuple(entries))
        on_stripe = {}
        finalized = {}
        for e in held.entries:
            if e.amount is None:
                continue
            minor = e.amount.to_minor_units()
            # Every amount kanvoice holds is one Stripe accepts, to the minor unit.
            assert minor % stripe_minor_step(currency) == 0
            assert e.amount == Money.from_minor_units(minor, currency)
            if e.state is EntryState.DRAFTED:
                on_stripe[e.entry_key] = minor
            elif e.state in (EntryState.INVOICED, EntryState.PAID):
                finalized[e.entry_key] = minor
    assert held is not None
    ledger_total = sum(
        (
            e.amount.amount
            for e in held.entries
            if e.amount is not None
            and e.state in (EntryState.DRAFTED, EntryState.INVOICED, EntryState.PAID)
        ),
        Decimal(0),
    )
    stripe_total = sum(on_stripe.values()) + sum(finalized.values())
    assert Money(ledger_total, currency).to_minor_units() == stripe_total
    assert Money.from_minor_units(stripe_total, currency).amount == ledger_total
