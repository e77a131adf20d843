"""Table tests for every billing rule of DESIGN.md, on the pure billing core."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from mapping.billing import (
    Action,
    ChangeEntryState,
    CreateEntry,
    HeldItem,
    Skip,
    evolve,
    plan,
)
from mapping.domain import (
    BillableEntry,
    BillingType,
    BoardItem,
    BoardPolicy,
    EntryKind,
    EntryState,
    RateRule,
    RateScope,
    RoundingMode,
    RoundingRule,
)
from mapping.money import Money
from mapping.rules import resolve_rate
from tests.builders import client, policy, snap


def run(
    snapshots: list[BoardItem], the_policy: BoardPolicy, held: HeldItem | None = None
) -> tuple[HeldItem | None, list[Action]]:
    all_actions: list[Action] = []
    for s in snapshots:
        actions = plan(s, held, the_policy)
        all_actions.extend(actions)
        held = evolve(held, actions)
    return held, all_actions


def billed(held: HeldItem | None, kind: EntryKind = EntryKind.TIME) -> list[tuple[str, str, str]]:
    """(state, hours, amount) of each entry of a kind, in order."""
    assert held is not None
    return [
        (e.state.value, str(e.hours), str(e.amount.amount) if e.amount else "-")
        for e in held.entries
        if e.kind is kind
    ]


# --- time and materials ----------------------------------------------------------------

T_AND_M_CASES = [
    pytest.param(
        [("In progress", "1", 1), ("In progress", "2.5", 2)],
        [("in_progress", "2.5", "250.00")],
        id="in progress: hours tracked, nothing ready",
    ),
    pytest.param(
        [("In progress", "1", 1), ("Done", "3", 2)],
        [("ready", "3", "300.00")],
        id="done: all hours ready at the frozen rate",
    ),
    pytest.param(
        [("Done", "3", 1)],
        [("ready", "3", "300.00")],
        id="done on first sight",
    ),
    pytest.param(
        [("Done", "3", 1), ("In progress", "3", 2), ("Done", "5", 3)],
        [("ready", "3", "300.00"), ("ready", "2", "200.00")],
        id="reopened and done again: only the new hours",
    ),
    pytest.param(
        [("Done", "3", 1), ("In progress", "4", 2)],
        [("ready", "3", "300.00"), ("in_progress", "1", "100.00")],
        id="reopened: new hours in progress",
    ),
    pytest.param(
        [("Done", "3", 1), ("In progress", "3", 2), ("Done", "3", 3)],
        [("ready", "3", "300.00")],
        id="reopened and done with no new hours: nothing new",
    ),
    pytest.param(
        [("In progress", "2", 1), ("In progress", "4", 2), ("Done", "3", 3)],
        [("ready", "3", "300.00")],
        id="hours lowered before done: the open entry follows",
    ),
    pytest.param(
        [("Done", "5", 1), ("In progress", "5", 2), ("Done", "3", 3)],
        [("ready", "3", "300.00")],
        id="hours lowered before invoicing: the ready line is reduced",
    ),
    pytest.param(
        [
            ("Done", "2", 1),
            ("In progress", "2", 2),
            ("Done", "3", 3),
            ("In progress", "3", 4),
            ("Done", "1", 5),
        ],
        [("ready", "1", "100.00"), ("voided", "0", "0.00")],
        id="lowered below the newest ready line: it is voided, the older reduced",
    ),
    pytest.param(
        [("Todo", None, 1), ("Done", None, 2)],
        [],
        id="no hours: nothing to bill",
    ),
    pytest.param(
        [("Done", "3", 1), ("Done", "4", 2)],
        [("ready", "3", "300.00"), ("ready", "1", "100.00")],
        id="hours added while done: the extra hours become ready",
    ),
]


@pytest.mark.parametrize(("moves", "expected"), T_AND_M_CASES)
def test_time_and_materials(
    moves: list[tuple[str, str | None, int]], expected: list[tuple[str, str, str]]
) -> None:
    held, _ = run([snap(c, h, r) for c, h, r in moves], policy())
    assert (billed(held) if held else []) == expected


ROUNDING_CASES = [
    (15, RoundingMode.UP, "1.01", "1.25"),
    (15, RoundingMode.UP, "1.25", "1.25"),
    (15, RoundingMode.NEAREST, "1.12", "1"),
    (15, RoundingMode.NEAREST, "1.125", "1.25"),
    (15, RoundingMode.DOWN, "1.24", "1"),
    (6, RoundingMode.UP, "0.01", "0.1"),
    (60, RoundingMode.UP, "0.2", "1"),
    (30, RoundingMode.DOWN, "0.2", "0"),
    (1, RoundingMode.UP, "0.5", "0.5"),
    (20, RoundingMode.NEAREST, "1.1", "1"),
    (20, RoundingMode.UP, "1.1", "1.333333"),
]


@pytest.mark.parametrize(("increment", "mode", "raw", "rounded"), ROUNDING_CASES)
def test_rounding_rule(increment: int, mode: RoundingMode, raw: str, rounded: str) -> None:
    assert RoundingRule(increment, mode).apply(Decimal(raw)) == Decimal(rounded)


def test_rounding_applies_to_the_item_total_and_raw_hours_are_kept() -> None:
    quarter_up = policy(client=client(rounding=RoundingRule(15, RoundingMode.UP)))
    held, actions = run(
        [snap("Done", "1.1", 1), snap("In progress", "1.1", 2), snap("Done", "1.3", 3)],
        quarter_up,
    )
    # 1.1 -> 1.25 billed; 1.3 -> 1.5 total, so 0.25 more; never rounding each delta.
    assert billed(held) == [("ready", "1.25", "125.00"), ("ready", "0.25", "25.00")]
    assert [a.item.hours for a in actions if hasattr(a, "item")] == [
        Decimal("1.1"),
        Decimal("1.1"),
        Decimal("1.3"),
    ]


def test_zero_decimal_and_three_decimal_currencies() -> None:
    yen = policy(client=client(currency="JPY", rate="12345.6"))
    held, _ = run([snap("Done", "1.5", 1)], yen)
    assert billed(held) == [("ready", "1.5", "18518")]
    dinar = policy(client=client(currency="KWD", rate="10.1234"))
    held, _ = run([snap("Done", "1.5", 1)], dinar)
    assert billed(held) == [("ready", "1.5", "15.190")]  # 15.1851: to the nearest ten fils


def test_rate_is_frozen_when_the_entry_becomes_ready() -> None:
    held, _ = run([snap("Done", "2", 1)], policy(client=client(rate="100")))
    # The client's rate changes; the ready line keeps its rate, new hours get the new one.
    held, _ = run(
        [snap("In progress", "2", 2), snap("Done", "3", 3)], policy(client=client(rate="200")), held
    )
    assert billed(held) == [("ready", "2", "200.00"), ("ready", "1", "200.00")]
    assert [e.rate for e in held.entries] == [Decimal("100"), Decimal("200")]


def test_hours_lowered_after_invoicing_need_review_and_never_credit() -> None:
    held, _ = run([snap("Done", "5", 1)], policy())
    assert held is not None
    invoiced = replace(
        held, entries=tuple(replace(e, state=EntryState.INVOICED) for e in held.entries)
    )
    held, actions = run([snap("In progress", "5", 2), snap("Done", "3", 3)], policy(), invoiced)
    assert billed(held) == [("invoiced", "5", "500.00")]
    assert billed(held, EntryKind.ADJUSTMENT) == [("needs_review", "-2", "-200.00")]
    created = [a for a in actions if isinstance(a, CreateEntry)]
    assert "no automatic credit" in created[-1].reason
    # The same lowered snapshot again is a no-op: no second adjustment.
    again, _ = run([snap("Done", "3", 4)], policy(), held)
    assert billed(again, EntryKind.ADJUSTMENT) == [("needs_review", "-2", "-200.00")]


def test_lowered_after_invoicing_takes_unapproved_lines_first() -> None:
    held, _ = run([snap("Done", "5", 1)], policy())
    assert held is not None
    held = replace(held, entries=tuple(replace(e, state=EntryState.PAID) for e in held.entries))
    held, _ = run([snap("In progress", "5", 2), snap("Done", "7", 3)], policy(), held)
    held, _ = run([snap("In progress", "7", 4), snap("Done", "4", 5)], policy(), held)
    assert billed(held) == [("paid", "5", "500.00"), ("voided", "0", "0.00")]
    assert billed(held, EntryKind.ADJUSTMENT) == [("needs_review", "-1", "-100.00")]


# --- fixed price -------------------------------------------------------------------------


def test_fixed_price_bills_the_milestone_once_on_first_done() -> None:
    moves = [
        snap("In progress", "4", 1, labels=("fixed-price",), milestone="2500"),
        snap("Done", "10", 2, labels=("fixed-price",), milestone="2500"),
        snap("In progress", "12", 3, labels=("fixed-price",), milestone="2500"),
        snap("Done", "20", 4, labels=("fixed-price",), milestone="2500"),
    ]
    held, _ = run(moves, policy())
    assert billed(held, EntryKind.MILESTONE) == [("ready", "10", "2500.00")]
    assert billed(held, EntryKind.TIME) == []


def test_fixed_price_without_amount_is_left_for_review() -> None:
    held, _ = run([snap("Done", "3", 1, billing_type=BillingType.FIXED_PRICE)], policy())
    assert billed(held, EntryKind.MILESTONE) == [("needs_review", "3", "-")]


# --- non-billable -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    [
        {"labels": ("internal",)},
        {"billing_type": BillingType.NON_BILLABLE},
        {"labels": ("Internal",), "billing_type": BillingType.TIME_AND_MATERIALS},
    ],
    ids=["label", "field value", "label wins over field"],
)
def test_non_billable_is_tracked_never_billed(how: dict[str, object]) -> None:
    held, _ = run(
        [snap("In progress", "2", 1, **how), snap("Done", "3", 2, **how)],  # type: ignore[arg-type]
        policy(),
    )
    assert billed(held, EntryKind.COST) == [("non_billable", "3", "-")]
    assert billed(held, EntryKind.TIME) == []


def test_board_rule_makes_everything_non_billable() -> None:
    held, _ = run([snap("Done", "3", 1)], policy(default_billing_type=BillingType.NON_BILLABLE))
    assert billed(held, EntryKind.COST) == [("non_billable", "3", "-")]


def test_becoming_non_billable_while_in_progress_drops_the_open_hours() -> None:
    held, _ = run(
        [snap("In progress", "2", 1), snap("Done", "3", 2, labels=("internal",))], policy()
    )
    assert billed(held) == [("voided", "0", "0.00")]
    assert billed(held, EntryKind.COST) == [("non_billable", "3", "-")]


# --- removed, stale, duplicate, done columns -----------------------------------------


def test_removed_items_are_never_billed() -> None:
    held, _ = run([snap("In progress", "2", 1), snap("Removed", "2", 2)], policy())
    assert billed(held) == [("voided", "0", "0.00")]


def test_stale_and_duplicate_snapshots_change_nothing() -> None:
    held, _ = run([snap("Done", "3", 5)], policy())
    assert plan(snap("Done", "3", 5), held, policy()) == (Skip("unchanged"),)
    stale = plan(snap("In progress", "9", 4), held, policy())
    assert len(stale) == 1 and isinstance(stale[0], Skip) and "stale" in stale[0].reason


def test_configured_done_column_counts_as_done() -> None:
    shipped = snap("In progress", "3", 1)
    shipped = replace(shipped, column="Shipped")
    held, _ = run([shipped], policy(done_columns=frozenset({"shipped"})))
    assert billed(held) == [("ready", "3", "300.00")]


def test_no_rate_anywhere_needs_review() -> None:
    held, actions = run([snap("Done", "3", 1)], policy(client=client(rate=None)))
    assert billed(held) == [("needs_review", "3", "-")]
    assert any(isinstance(a, CreateEntry) and "no rate" in a.reason for a in actions)


def test_every_state_change_is_an_action() -> None:
    _, actions = run([snap("In progress", "1", 1), snap("Done", "2", 2)], policy())
    changes = [a for a in actions if isinstance(a, ChangeEntryState)]
    assert [(c.from_state, c.to_state) for c in changes] == [
        (EntryState.IN_PROGRESS, EntryState.READY)
    ]


# --- rate resolution ----------------------------------------------------------------------

RATE_RULES_CLIENT = (
    RateRule(RateScope.LABEL, Decimal("150"), "senior"),
    RateRule(RateScope.CLIENT, Decimal("130"), effective_from=date(2027, 1, 1)),
)


@pytest.mark.parametrize(
    ("item_rate", "labels", "board_rate", "on", "expected", "scope"),
    [
        ("99", ("senior",), "110", date(2026, 11, 1), "99", RateScope.ITEM),
        (None, ("senior",), "110", date(2026, 11, 1), "150", RateScope.LABEL),
        (None, ("rush",), "110", date(2026, 11, 1), "180", RateScope.LABEL),
        (None, (), "110", date(2026, 11, 1), "110", RateScope.BOARD),
        (None, (), None, date(2026, 11, 1), "120", RateScope.CLIENT),
        (None, (), None, date(2027, 1, 1), "130", RateScope.CLIENT),
        (None, (), None, date(2026, 12, 31), "120", RateScope.CLIENT),
    ],
)
def test_rate_resolution_most_specific_wins(
    item_rate: str | None,
    labels: tuple[str, ...],
    board_rate: str | None,
    on: date,
    expected: str,
    scope: RateScope,
) -> None:
    the_policy = policy(
        client=client(rate="120", rules=RATE_RULES_CLIENT),
        rate=Decimal(board_rate) if board_rate else None,
        rate_rules=(RateRule(RateScope.LABEL, Decimal("180"), "rush"),),
        default_rate=Decimal("90"),
    )
    item = snap("Done", "1", 1, labels=labels, rate=item_rate)
    resolved = resolve_rate(item, the_policy, on)
    assert resolved is not None
    assert (resolved.rate, resolved.scope) == (Decimal(expected), scope)


def test_default_rate_when_nothing_else() -> None:
    the_policy = policy(client=client(rate=None), default_rate=Decimal("90"))
    resolved = resolve_rate(snap("Done", "1", 1), the_policy, date(2026, 1, 1))
    assert resolved is not None and resolved.scope is RateScope.DEFAULT


def test_dated_board_rule_applies_from_its_date() -> None:
    the_policy = policy(
        rate=Decimal("100"),
        rate_rules=(RateRule(RateScope.BOARD, Decimal("115"), effective_from=date(2026, 12, 1)),),
    )
    before = resolve_rate(snap("Done", "1", 1), the_policy, date(2026, 11, 30))
    after = resolve_rate(snap("Done", "1", 1), the_policy, date(2026, 12, 1))
    assert before is not None and after is not None
    assert (before.rate, after.rate) == (Decimal("100"), Decimal("115"))


def test_entry_amounts_are_money_in_the_client_currency() -> None:
    held, _ = run([snap("Done", "2", 1)], policy(client=client(currency="usd")))
    assert held is not None
    entry: BillableEntry = held.entries[0]
    assert entry.amount == Money(Decimal("200.00"), "USD")


# --- equal revision, different content ----------------------------------------------------


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(snap("Done", "5", 3), id="other hours"),
        pytest.param(snap("Done", "3", 3, labels=("rush",)), id="other labels"),
        pytest.param(snap("In progress", "3", 3), id="other column"),
    ],
)
def test_an_equal_revision_with_other_content_changes_nothing_unless_reread(
    second: BoardItem,
) -> None:
    from mapping.billing import Conflict

    the_policy = policy()
    held, _ = run([snap("Done", "3", 3)], the_policy)
    assert held is not None
    (action,) = plan(second, held, the_policy)
    assert isinstance(action, Conflict) and action.revision == 3
    assert evolve(held, (action,)) == held
    # Read again from the board on purpose: the board's current truth is applied.
    reread = plan(second, held, the_policy, reread=True)
    assert not any(isinstance(a, Skip) for a in reread)
    # An identical snapshot at that revision is still just unchanged.
    assert plan(snap("Done", "3", 3), held, the_policy, reread=True) == (Skip("unchanged"),)
