"""Retainers: covered hours, overage at the overage rate, rollover with a cap; money
exact to the currency's minor unit (zero- and three-decimal currencies included)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapping.money import Money
from mapping.retainers import (
    PlacedEntry,
    Release,
    RetainerPeriod,
    RetainerTerms,
    WorkEntry,
    next_period,
    plan_retainer,
    release_lowered,
    rollover_out,
    usage,
)

D = Decimal


def terms(
    currency: str = "EUR",
    amount: str = "6000",
    hours: str = "40",
    overage: str | None = "175",
    rollover: bool = False,
    cap: str | None = None,
) -> RetainerTerms:
    return RetainerTerms(
        currency,
        D(amount),
        D(hours),
        D(overage) if overage is not None else None,
        rollover,
        D(cap) if cap is not None else None,
    )


@pytest.mark.parametrize(
    ("retainer", "counted", "entries", "line", "covered", "overage", "amounts"),
    [
        # inside the retainer: covered, no overage, the fixed line once
        (terms(), "0", [("10", "120")], "6000.00", ["10"], ["0"], [None]),
        # exactly at the included hours: still all covered
        (terms(), "30", [("10", "120")], "6000.00", ["10"], ["0"], [None]),
        # an entry straddling the limit is split: 5 h covered, 3 h overage at 175
        (terms(), "35", [("8", "120")], "6000.00", ["5"], ["3"], ["525.00"]),
        # everything after the limit is overage, in entry order
        (
            terms(),
            "38",
            [("1.5", "120"), ("2.25", "120")],
            "6000.00",
            ["1.5", "0.5"],
            ["0", "1.75"],
            [None, "306.25"],
        ),
        # no overage rate: the entry's own rate
        (terms(overage=None), "40", [("2", "130")], "6000.00", ["0"], ["2"], ["260.00"]),
        # JPY: zero decimals, half up (1.333333 h × 9999 = 13331.99 → 13332)
        (
            terms("JPY", "500000", "40", "9999"),
            "40",
            [("1.333333", "1")],
            "500000",
            ["0"],
            ["1.333333"],
            ["13332"],
        ),
        # KWD: three decimals, Stripe's nearest ten fils (0.7 h × 45.555 = 31.8885 → 31.890)
        (
            terms("KWD", "1500.555", "20", "45.555"),
            "20",
            [("0.7", None)],
            "1500.560",
            ["0"],
            ["0.7"],
            ["31.890"],
        ),
    ],
)
def test_retainer_table(
    retainer: RetainerTerms,
    counted: str,
    entries: list[tuple[str, str | None]],
    line: str,
    covered: list[str],
    overage: list[str],
    amounts: list[str | None],
) -> None:
    period = RetainerPeriod("2026-12", D(counted), min(D(counted), retainer.included_hours))
    plan = plan_retainer(
        retainer,
        period,
        [WorkEntry(i, D(h), D(r) if r else None) for i, (h, r) in enumerate(entries)],
    )
    assert plan.retainer_line is not None
    assert str(plan.retainer_line.amount) == line
    assert [a.covered_hours for a in plan.allocations] == [D(c) for c in covered]
    assert [a.overage_hours for a in plan.allocations] == [D(o) for o in overage]
    assert [
        str(a.overage_amount.amount) if a.overage_amount else None for a in plan.allocations
    ] == amounts


def test_the_fixed_line_is_billed_once_per_period() -> None:
    first = plan_retainer(terms(), RetainerPeriod("2026-12"), [WorkEntry(1, D(3), D(1))])
    assert first.retainer_line == Money(D("6000.00"), "EUR")
    second = plan_retainer(terms(), first.period, [WorkEntry(2, D(3), D(1))])
    assert second.retainer_line is None
    assert second.period.counted_hours == D(6)
    # a new period bills it again
    third = plan_retainer(terms(), next_period(terms(), second.period, "2027-01"), [])
    assert third.retainer_line is not None


@pytest.mark.parametrize(
    ("rollover", "cap", "covered", "rolled_in", "out"),
    [
        (False, None, "10", "0", "0"),  # no rollover: unused hours lapse
        (True, None, "10", "0", "30"),  # all unused hours carry
        (True, "20", "10", "0", "20"),  # capped
        (True, "20", "40", "0", "0"),  # nothing unused
        (True, "20", "45", "15", "10"),  # rolled-in hours used first… 55 − 45 = 10
        (True, "20", "0", "20", "20"),  # unused rolled-in hours carry again, within the cap
    ],
)
def test_rollover_table(
    rollover: bool, cap: str | None, covered: str, rolled_in: str, out: str
) -> None:
    retainer = terms(rollover=rollover, cap=cap)
    period = RetainerPeriod("2026-12", D(covered), D(covered), D(rolled_in), True)
    assert rollover_out(retainer, period) == D(out)


def test_rolled_over_hours_are_covered_in_the_next_period() -> None:
    retainer = terms(hours="10", amount="1500", rollover=True, cap="5")
    december = plan_retainer(retainer, RetainerPeriod("2026-12"), [WorkEntry(1, D(4), None)])
    january = next_period(retainer, december.period, "2027-01")
    assert january.rollover_in == D(5)  # 6 unused, capped at 5
    plan = plan_retainer(retainer, january, [WorkEntry(2, D(16), D(100))])
    assert plan.allocations[0].covered_hours == D(15)
    assert plan.allocations[0].overage_hours == D(1)
    assert plan.allocations[0].overage_amount == Money(D("175.00"), "EUR")


def test_usage_for_the_dashboard() -> None:
    retainer = terms(hours="40", amount="6000")
    plan = plan_retainer(retainer, RetainerPeriod("2026-12"), [WorkEntry(1, D(42), None)])
    seen = usage(retainer, plan.period)
    assert (seen.used_hours, seen.available_hours, seen.overage_hours) == (D(40), D(40), D(2))
    assert seen.value_used == Money(D("6000.00"), "EUR")
    assert seen.percent == D(100)


def test_terms_refuse_negative_numbers() -> None:
    with pytest.raises(ValueError, match="included_hours"):
        terms(hours="-1")


hours = st.decimals(min_value=0, max_value=200, places=2, allow_nan=False, allow_infinity=False)


@given(
    included=hours,
    counted=hours,
    entries=st.lists(hours, max_size=12),
    rollover=st.booleans(),
    cap=st.none() | hours,
    rolled_in=hours,
    currency=st.sampled_from(["EUR", "JPY", "KWD"]),
)
def test_properties(
    included: Decimal,
    counted: Decimal,
    entries: list[Decimal],
    rollover: bool,
    cap: Decimal | None,
    rolled_in: Decimal,
    currency: str,
) -> None:
    retainer = RetainerTerms(currency, D("1000"), included, D("33.333"), rollover, cap)
    covered_before = min(counted, included + (rolled_in if rollover else 0))
    period = RetainerPeriod("p", counted, covered_before, rolled_in if rollover else D(0))
    plan = plan_retainer(retainer, period, [WorkEntry(i, h, None) for i, h in enumerate(entries)])
    for allocation, entry in zip(plan.allocations, entries, strict=True):
        # covered + overage = the entry's hours, neither negative
        assert allocation.covered_hours + allocation.overage_hours == entry
        assert allocation.covered_hours >= 0 and allocation.overage_hours >= 0
        if allocation.overage_amount is not None:
            # exact to the minor unit Stripe takes
            amount = allocation.overage_amount
            assert Money.from_minor_units(amount.to_minor_units(), currency) == amount
    # never more covered than available; overage only once the retainer is used up
    available = included + (period.rollover_in if rollover else 0)
    assert plan.period.covered_hours <= max(available, covered_before)
    if any(a.overage_hours for a in plan.allocations):
        assert plan.period.covered_hours >= available
    out = rollover_out(retainer, plan.period)
    assert out >= 0
    if cap is not None:
        assert out <= cap
    if not rollover:
        assert out == 0


@given(entries=st.lists(hours, min_size=1, max_size=10), split=st.integers(0, 10))
def test_chunking_does_not_change_the_result(entries: list[Decimal], split: int) -> None:
    """Drafting the same entries in one go or in two drafts covers the same hours."""
    retainer = terms(hours="25")
    whole = plan_retainer(
        retainer, RetainerPeriod("p"), [WorkEntry(i, h, None) for i, h in enumerate(entries)]
    )
    first = plan_retainer(
        retainer,
        RetainerPeriod("p"),
        [WorkEntry(i, h, None) for i, h in enumerate(entries[:split])],
    )
    second = plan_retainer(
        retainer,
        first.period,
        [WorkEntry(i + split, h, None) for i, h in enumerate(entries[split:])],
    )
    assert whole.allocations == first.allocations + second.allocations
    assert whole.period == second.period


# -- hours lowered after the retainer placed them ----------------------------------------

LOWERED = [
    # (placed: (covered, overage, hours now)), period (counted, covered) after,
    # allocations after (covered, overage) per released entry
    ([("6", "0", "4")], ("8", "8"), ("6", "6"), [("4", "0")]),  # covered: 2 h given back
    ([("6", "0", "0")], ("8", "8"), ("2", "2"), [("0", "0")]),  # voided: all of it
    ([("0", "3", "1")], ("12", "10"), ("10", "10"), [("0", "1")]),  # overage only
    ([("2", "3", "1")], ("12", "10"), ("8", "9"), [("1", "0")]),  # overage first, then covered
    ([("6", "0", "6"), ("2", "0", "9")], ("8", "8"), ("8", "8"), []),  # unchanged / raised
    (
        [("1.5", "0", "0.25"), ("0", "0.5", "0")],
        ("2", "1.5"),
        ("0.25", "0.25"),
        [("0.25", "0"), ("0", "0")],
    ),
]


@pytest.mark.parametrize(("placed", "before", "after", "allocations"), LOWERED)
def test_lowered_hours_give_back_what_the_period_counted(
    placed: list[tuple[str, str, str]],
    before: tuple[str, str],
    after: tuple[str, str],
    allocations: list[tuple[str, str]],
) -> None:
    period = RetainerPeriod("2026-11", D(before[0]), D(before[1]), D(3), True)
    entries = [PlacedEntry(i, D(c), D(o), D(h)) for i, (c, o, h) in enumerate(placed)]
    state, releases = release_lowered(period, entries)
    assert (state.counted_hours, state.covered_hours) == (D(after[0]), D(after[1]))
    assert (state.rollover_in, state.line_billed, state.period_key) == (D(3), True, "2026-11")
    assert [(r.covered_hours, r.overage_hours) for r in releases] == [
        (D(c), D(o)) for c, o in allocations
    ]
    assert all(isinstance(r, Release) for r in releases)


@given(
    st.lists(
        st.tuples(
            st.decimals(0, 20, places=2), st.decimals(0, 20, places=2), st.decimals(0, 40, places=2)
        ),
        max_size=6,
    )
)
def test_released_hours_match_the_entries_hours(
    rows: list[tuple[Decimal, Decimal, Decimal]],
) -> None:
    """Whatever falls: the period keeps exactly the hours its entries still hold."""
    entries = [PlacedEntry(i, c, o, h) for i, (c, o, h) in enumerate(rows)]
    counted = sum((c + o for c, o, _ in rows), D(0))
    covered = sum((c for c, _, _ in rows), D(0))
    state, releases = release_lowered(RetainerPeriod("p", counted, covered), entries)
    after = {r.entry_id: (r.covered_hours, r.overage_hours) for r in releases}
    kept = [after.get(e.entry_id, (e.covered_hours, e.overage_hours)) for e in entries]
    assert state.counted_hours == sum((c + o for c, o in kept), D(0))
    assert state.covered_hours == sum((c for c, _ in kept), D(0))
    for entry, (c, o) in zip(entries, kept, strict=True):
        assert 0 <= c <= entry.covered_hours and 0 <= o <= entry.overage_hours
        assert c + o == min(entry.covered_hours + entry.overage_hours, entry.hours_now)
