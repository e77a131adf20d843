"""Budgets: spend against a cap in hours or money, threshold alerts once per threshold
per period, and the over-budget flag."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapping.budgets import (
    Budget,
    Spend,
    SpendLine,
    alerts_to_send,
    over_budget_lines,
    status,
)
from mapping.money import Money

D = Decimal


def spend(hours: str, amount: str = "0", currency: str = "EUR") -> Spend:
    return Spend(D(hours), Money(D(amount), currency))


@pytest.mark.parametrize(
    ("budget", "spent", "sent", "alerts", "over"),
    [
        (Budget("client:acme", "EUR", hours=D(200)), spend("159.99"), [], [], False),
        (Budget("client:acme", "EUR", hours=D(200)), spend("160"), [], [80], False),
        (Budget("client:acme", "EUR", hours=D(200)), spend("200"), [], [80, 100], False),
        (Budget("client:acme", "EUR", hours=D(200)), spend("200.01"), [80], [100], True),
        (Budget("client:acme", "EUR", hours=D(200)), spend("250"), [80, 100], [], True),
        # money: exact to the minor unit (EUR 23 999.99 of 30 000 is under 80 %)
        (Budget("board:web", "EUR", amount=D(30000)), spend("0", "23999.99"), [], [], False),
        (Budget("board:web", "EUR", amount=D(30000)), spend("0", "24000.00"), [], [80], False),
        # JPY: zero decimals
        (
            Budget("board:web", "JPY", amount=D(1000000)),
            spend("0", "800000", "JPY"),
            [],
            [80],
            False,
        ),
        (
            Budget("board:web", "JPY", amount=D(1000000)),
            spend("0", "1000001", "JPY"),
            [80],
            [100],
            True,
        ),
        # KWD: three decimals
        (
            Budget("client:k", "KWD", amount=D("100.000")),
            spend("0", "79.990", "KWD"),
            [],
            [],
            False,
        ),
        # hours and money: whichever reaches the threshold first
        (
            Budget("client:acme", "EUR", hours=D(100), amount=D(10000)),
            spend("50", "9000"),
            [],
            [80],
            False,
        ),
        # custom thresholds, unordered and repeated in the settings
        (
            Budget("client:acme", "EUR", hours=D(10), thresholds=(100, 50, 50, 75)),
            spend("8"),
            [],
            [50, 75],
            False,
        ),
    ],
)
def test_threshold_table(
    budget: Budget, spent: Spend, sent: list[int], alerts: list[int], over: bool
) -> None:
    found = alerts_to_send(budget, "2026-12", spent, sent)
    assert [a.threshold for a in found] == alerts
    assert status(budget, spent).over is over
    for alert in found:
        assert alert.dedupe_key == f"budget|{budget.scope}|2026-12|{alert.threshold}"


def test_alert_text_names_the_spend_and_the_cap() -> None:
    budget = Budget("client:acme", "EUR", hours=D(200), amount=D("30000"))
    (alert, *_) = alerts_to_send(budget, "2026-12", spend("170", "20400"), [])
    assert alert.text == (
        "Budget 80 % reached: client:acme: 170 h of 200 h, 20,400.00 EUR of 30,000.00 EUR (85.0 %)"
    )


def test_a_total_budget_dedupes_across_periods() -> None:
    budget = Budget("board:web", "EUR", hours=D(10), per="total")
    (alert,) = alerts_to_send(budget, "2026-12", spend("9"), [])
    assert alert.period_key == "total"
    assert alerts_to_send(budget, "2027-01", spend("9.5"), [alert.threshold]) == ()


def test_over_budget_lines_are_those_past_the_cap() -> None:
    budget = Budget("client:acme", "EUR", hours=D(10))
    lines = [
        SpendLine(1, D(4), Money(D(400), "EUR")),
        SpendLine(2, D(2), Money(D(200), "EUR")),
        SpendLine(3, D(1), Money(D(100), "EUR")),
    ]
    # 4 + 4 + 2 = 10 h is exactly the cap (not over); the 1 h after it is
    assert over_budget_lines(budget, spend("4"), lines) == (3,)
    assert over_budget_lines(budget, spend("5"), lines) == (2, 3)
    assert over_budget_lines(budget, spend("0"), lines) == ()
    # a line adding nothing to the exceeded measure (a 0 h retainer line) is not flagged
    retainer = SpendLine(4, D(0), Money(D(1500), "EUR"))
    assert over_budget_lines(budget, spend("5"), [*lines, retainer]) == (2, 3)
    by_money = Budget("client:acme", "EUR", amount=D(1000))
    assert over_budget_lines(by_money, spend("0"), [*lines, retainer]) == (4,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs hours or amount"),
        ({"hours": D(0)}, "expected a number > 0"),
        ({"hours": D(1), "thresholds": ()}, "thresholds"),
        ({"hours": D(1), "per": "year"}, "per 'year'"),
    ],
)
def test_budget_refuses_bad_terms(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Budget("client:acme", "EUR", **kwargs)  # type: ignore[arg-type]


amounts = st.decimals(min_value=0, max_value=500, places=2, allow_nan=False, allow_infinity=False)


@given(
    entries=st.lists(amounts, max_size=20),
    cuts=st.lists(st.integers(0, 20), max_size=5),
    thresholds=st.lists(st.integers(1, 150), min_size=1, max_size=4),
)
def test_each_threshold_fires_at_most_once_whatever_the_chunking(
    entries: list[Decimal], cuts: list[int], thresholds: list[int]
) -> None:
    """The shell records every alert it sends; spending in chunks (any cut points)
    alerts each reached threshold exactly once, the same set as spending at once."""
    budget = Budget("client:acme", "EUR", hours=D(1000), thresholds=tuple(thresholds))
    bounds = sorted({0, len(entries), *(c for c in cuts if c <= len(entries))})
    sent: list[int] = []
    total = D(0)
    for start, end in pairwise(bounds):
        total += sum(entries[start:end], D(0))
        sent.extend(a.threshold for a in alerts_to_send(budget, "p", spend(str(total)), sent))
    assert len(sent) == len(set(sent))
    at_once = alerts_to_send(budget, "p", spend(str(sum(entries, D(0)))), [])
    assert sorted(sent) == [a.threshold for a in at_once]
