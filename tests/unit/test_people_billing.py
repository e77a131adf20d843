"""Table tests for issue 18: who did the work. Rate precedence with people and roles,
splits of hours between assignees, effective dates, cost and per-person entry keys."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapping.billing import Action, HeldItem, evolve, plan, split_hours
from mapping.domain import (
    BillingType,
    BoardItem,
    BoardPolicy,
    DatedRate,
    EntryKind,
    Person,
    RateRule,
    RateScope,
    Role,
    RoundingMode,
    RoundingRule,
    Staff,
)
from mapping.rules import resolve_cost_rate, resolve_rate
from tests.builders import client, policy, snap

D = Decimal

SENIOR = Role("senior", "Senior developer", (DatedRate(D("150")),), (DatedRate(D("70")),))
JUNIOR = Role(
    "junior",
    "Junior developer",
    (DatedRate(D("90")), DatedRate(D("95"), date(2026, 11, 15))),
    (DatedRate(D("40")),),
)
ALICE = Person(
    "alice",
    "Alice",
    frozenset({"alice-gh", "alice@agency.example"}),
    "senior",
    (DatedRate(D("160")), DatedRate(D("170"), date(2026, 11, 20))),
    (DatedRate(D("80")),),
)
BOB = Person("bob", "Bob", frozenset({"bob-gh"}), "junior")
CAROL = Person("carol", "Carol", frozenset({"carol-gh"}), None, (), (DatedRate(D("50")),))
STAFF = Staff((ALICE, BOB, CAROL), (SENIOR, JUNIOR), default_cost_rate=D("30"))


def staffed(**kwargs: object) -> BoardPolicy:
    return replace(policy(**kwargs), staff=STAFF)


def with_people(item: BoardItem, *who: str, **extra: object) -> BoardItem:
    return replace(item, assignees=who, **extra)  # type: ignore[arg-type]


def run(snapshots: list[BoardItem], the_policy: BoardPolicy) -> tuple[HeldItem, list[Action]]:
    held: HeldItem | None = None
    out: list[Action] = []
    for s in snapshots:
        actions = plan(s, held, the_policy)
        out.extend(actions)
        held = evolve(held, actions)
    assert held is not None
    return held, out


def lines(held: HeldItem, kind: EntryKind = EntryKind.TIME) -> list[tuple[str, ...]]:
    """(key suffix, state, person, hours, rate, amount, cost) of each entry of a kind."""
    return [
        (
            e.entry_key.split("#", 1)[1],
            e.state.value,
            e.person or "-",
            str(e.hours),
            str(e.rate) if e.rate is not None else "-",
            str(e.amount.amount) if e.amount else "-",
            str(e.cost.amount) if e.cost else "-",
        )
        for e in held.entries
        if e.kind is kind
    ]


# --- precedence: item field > label rule > person > role > board > client > default -----

ON = date(2026, 11, 10)
PRECEDENCE = [
    # (item rate, label rule, assignee, board rate, client rate, default) -> (rate, scope)
    pytest.param("200", True, "alice-gh", "110", "100", "80", ("200", "item"), id="item field"),
    pytest.param(None, True, "alice-gh", "110", "100", "80", ("180", "label"), id="label rule"),
    pytest.param(None, False, "alice-gh", "110", "100", "80", ("160", "person"), id="person"),
    pytest.param(None, False, "bob-gh", "110", "100", "80", ("90", "role"), id="role"),
    pytest.param(None, False, "carol-gh", "110", "100", "80", ("110", "board"), id="no role rate"),
    pytest.param(None, False, "stranger", "110", "100", "80", ("110", "board"), id="unknown"),
    pytest.param(None, False, "stranger", None, "100", "80", ("100", "client"), id="client"),
    pytest.param(None, False, "stranger", None, None, "80", ("80", "default"), id="default"),
    pytest.param(None, False, "stranger", None, None, None, None, id="nothing: review"),
]


@pytest.mark.parametrize("item_rate,label,who,board_rate,client_rate,default,expected", PRECEDENCE)
def test_rate_precedence(
    item_rate: str | None,
    label: bool,
    who: str,
    board_rate: str | None,
    client_rate: str | None,
    default: str | None,
    expected: tuple[str, str] | None,
) -> None:
    the_policy = staffed(
        client=client(rate=client_rate),
        rate=D(board_rate) if board_rate else None,
        default_rate=D(default) if default else None,
        rate_rules=(RateRule(RateScope.LABEL, D("180"), "rush"),),
    )
    item = snap("Done", "1", 1, labels=("rush",) if label else (), rate=item_rate)
    resolved = resolve_rate(item, the_policy, ON, STAFF.worker(who))
    got = (str(resolved.rate), resolved.scope.value) if resolved else None
    assert got == expected


EFFECTIVE = [
    pytest.param("alice-gh", date(2026, 11, 19), "160", "80", id="person before change"),
    pytest.param("alice-gh", date(2026, 11, 20), "170", "80", id="person from change"),
    pytest.param("bob-gh", date(2026, 11, 14), "90", "40", id="role before change"),
    pytest.param("bob-gh", date(2026, 11, 15), "95", "40", id="role from change"),
    pytest.param("carol-gh", date(2026, 11, 15), "100", "50", id="own cost, client rate"),
    pytest.param("stranger", date(2026, 11, 15), "100", "30", id="unknown: default cost"),
]


@pytest.mark.parametrize("who,on,rate,cost", EFFECTIVE)
def test_effective_dates_of_person_and_role(who: str, on: date, rate: str, cost: str) -> None:
    the_policy = staffed()
    worker = STAFF.worker(who)
    resolved = resolve_rate(snap("Done", "1", 1), the_policy, on, worker)
    assert resolved is not None and str(resolved.rate) == rate
    assert str(resolve_cost_rate(the_policy, on, worker)) == cost


def test_identities_match_without_case() -> None:
    assert STAFF.worker("ALICE@Agency.Example").key == "alice"
    assert STAFF.worker("Alice-GH").person is ALICE
    assert STAFF.worker("Stranger").key == "stranger"
    assert STAFF.worker("Stranger").person is None


# --- splits ----------------------------------------------------------------------------

QUARTER = RoundingRule(15, RoundingMode.UP)
SPLITS = [
    pytest.param(
        [with_people(snap("Done", "4", 1), "alice-gh", "bob-gh")],
        [
            ("time-1@alice", "ready", "alice", "2", "160", "320.00", "160.00"),
            ("time-2@bob", "ready", "bob", "2", "90", "180.00", "80.00"),
        ],
        id="two assignees: equal share, each at their own rate",
    ),
    pytest.param(
        [with_people(snap("Done", "2.5", 1), "alice-gh", "bob-gh", "stranger")],
        [
            ("time-1@alice", "ready", "alice", "1", "160", "160.00", "80.00"),
            ("time-2@bob", "ready", "bob", "0.75", "90", "67.50", "30.00"),
            ("time-3@stranger", "ready", "stranger", "0.75", "100", "75.00", "22.50"),
        ],
        id="three: whole quarters, the extra quarter to the first; unknown at client rate",
    ),
    pytest.param(
        [
            with_people(
                snap("Done", "4", 1),
                "alice-gh",
                "bob-gh",
                hours_by_person=(("alice-gh", D("3")), ("bob-gh", D("1"))),
            )
        ],
        [
            ("time-1@alice", "ready", "alice", "3", "160", "480.00", "240.00"),
            ("time-2@bob", "ready", "bob", "1", "90", "90.00", "40.00"),
        ],
        id="hours by person field",
    ),
    pytest.param(
        [
            with_people(snap("Done", "4", 1), "alice-gh", "bob-gh"),
            with_people(snap("In progress", "4", 2), "alice-gh", "bob-gh"),
            with_people(
                snap("Done", "7", 3),
                "alice-gh",
                "bob-gh",
                hours_by_person=(("alice-gh", D("2")), ("bob-gh", D("5"))),
            ),
        ],
        [
            ("time-1@alice", "ready", "alice", "2", "160", "320.00", "160.00"),
            ("time-2@bob", "ready", "bob", "2", "90", "180.00", "80.00"),
            ("time-3@bob", "ready", "bob", "3", "90", "270.00", "120.00"),
        ],
        id="re-opened: each person billed only their new hours",
    ),
    pytest.param(
        [
            with_people(snap("Done", "2", 1), "alice-gh"),
            with_people(snap("In progress", "2", 2), "bob-gh"),
            with_people(snap("Done", "3", 3), "bob-gh"),
        ],
        [
            ("time-1@alice", "ready", "alice", "2", "160", "320.00", "160.00"),
            ("time-2@bob", "ready", "bob", "1", "90", "90.00", "40.00"),
        ],
        id="re-assigned: the new hours go to the new assignee, nothing billed twice",
    ),
    pytest.param(
        [
            with_people(snap("In progress", "2", 1), "alice-gh", "bob-gh"),
            with_people(snap("Done", "2", 2), "alice-gh"),
        ],
        [
            ("time-1@alice", "ready", "alice", "2", "160", "320.00", "160.00"),
            ("time-2@bob", "voided", "bob", "0", "90", "0.00", "0.00"),
        ],
        id="in progress per person; done with one assignee left",
    ),
    pytest.param(
        [snap("Done", "2", 1)],
        [("time-1", "ready", "-", "2", "100", "200.00", "60.00")],
        id="nobody assigned: one entry for the item, as before",
    ),
    pytest.param(
        [
            with_people(snap("Done", "4", 1), "alice-gh", "bob-gh"),
            with_people(snap("Done", "3", 2), "alice-gh", "bob-gh"),
        ],
        [
            ("time-1@alice", "ready", "alice", "2", "160", "320.00", "160.00"),
            ("time-2@bob", "ready", "bob", "1", "90", "90.00", "40.00"),
        ],
        id="hours lowered before invoicing: newest line reduced",
    ),
]


@pytest.mark.parametrize("snapshots,expected", SPLITS)
def test_splits(snapshots: list[BoardItem], expected: list[tuple[str, ...]]) -> None:
    held, _ = run(snapshots, staffed(rounding=QUARTER))
    assert lines(held) == expected


def test_without_people_the_assignees_change_nothing() -> None:
    item = with_people(snap("Done", "4", 1), "alice-gh", "bob-gh")
    held, _ = run([item], policy())
    assert lines(held) == [("time-1", "ready", "-", "4", "100", "400.00", "-")]


def test_milestone_and_non_billable_carry_their_cost() -> None:
    fixed = with_people(
        snap("Done", "10", 1, billing_type=BillingType.FIXED_PRICE, milestone="1000"),
        "alice-gh",
        "bob-gh",
    )
    held, _ = run([fixed], staffed())
    assert lines(held, EntryKind.MILESTONE) == [
        ("milestone-1", "ready", "-", "10", "-", "1000.00", "600.00")
    ]
    internal = with_people(snap("Done", "3", 1, labels=("internal",)), "carol-gh")
    held, _ = run([internal], staffed())
    assert lines(held, EntryKind.COST) == [
        ("cost-1", "non_billable", "carol", "3", "-", "-", "150.00")
    ]


def test_replaying_a_snapshot_changes_nothing() -> None:
    item = with_people(snap("Done", "4", 1), "alice-gh", "bob-gh")
    held, _ = run([item], staffed())
    assert [type(a).__name__ for a in plan(item, held, staffed())] == ["Skip"]


@given(
    total_quarters=st.integers(min_value=0, max_value=400),
    weights=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=6),
    extra_minutes=st.integers(min_value=0, max_value=14),
)
def test_split_always_adds_up(total_quarters: int, weights: list[int], extra_minutes: int) -> None:
    total = D(total_quarters) / 4 + D(extra_minutes) / 60
    total = total.quantize(D("0.000001"))
    shares = split_hours(total, [D(w) for w in weights], 15)
    assert sum(shares, D(0)) == total
    assert all(s >= 0 for s in shares)


def test_people_configured_later_never_bill_settled_hours_again() -> None:
    """An item billed per item before [[people]] existed, re-opened afterwards: only the
    new hours are billed, now per person; the old line keeps its key."""
    held, _ = run([with_people(snap("Done", "3", 1), "alice-gh")], policy())
    assert lines(held) == [("time-1", "ready", "-", "3", "100", "300.00", "-")]
    for s in (
        with_people(snap("In progress", "3", 2), "alice-gh", "bob-gh"),
        with_people(snap("Done", "5", 3), "alice-gh", "bob-gh"),
    ):
        actions = plan(s, held, staffed())
        held = evolve(held, actions)  # type: ignore[assignment]
    assert lines(held) == [
        ("time-1", "ready", "-", "3", "100", "300.00", "-"),
        ("time-2@alice", "ready", "alice", "1", "160", "160.00", "80.00"),
        ("time-3@bob", "ready", "bob", "1", "90", "90.00", "40.00"),
    ]


PEOPLE_IDS = ["alice-gh", "bob-gh", "carol-gh", "stranger"]


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["In progress", "Done"]),
            st.integers(min_value=0, max_value=40),  # quarters of an hour
            st.lists(st.sampled_from(PEOPLE_IDS), max_size=3, unique=True),
            st.booleans(),  # with an "Hours by person" field
        ),
        min_size=1,
        max_size=6,
    )
)
def test_never_billed_twice_nor_missed_per_person(
    steps: list[tuple[str, int, list[str], bool]],
) -> None:
    """Whatever the assignees, splits and re-openings: once Done, the hours settled for
    the item are exactly its rounded total, and every entry key is unique."""
    the_policy = staffed(rounding=QUARTER)
    held: HeldItem | None = None
    for revision, (column, quarters, who, with_field) in enumerate(steps, start=1):
        hours = D(quarters) / 4
        by_person = tuple((w, hours / len(who)) for w in who) if with_field and who else ()
        item = replace(
            snap(column, str(hours), revision), assignees=tuple(who), hours_by_person=by_person
        )
        held = evolve(held, plan(item, held, the_policy))
    assert held is not None
    keys = [e.entry_key for e in held.entries]
    assert len(keys) == len(set(keys))
    if steps[-1][0] == "Done":
        from mapping.billing import settled_hours

        assert settled_hours(held.entries) == D(steps[-1][1]) / 4
