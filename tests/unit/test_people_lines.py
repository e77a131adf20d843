"""Tables for issue 18's pure helpers: the "Hours by person" field, how invoice lines
name who did the work (`line_grouping`), people without a rate, profitability sums."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from mapping.domain import DatedRate, EntryKind, EntryState, LineGrouping, Person, Role, Staff
from mapping.profitability import Dimension, ProfitEntry, ProfitFilter, milestones, profitability
from mapping.rules import parse_hours_by_person, people_without_rate
from mapping.stripe_lines import LineSource, StripeCustomer, line_who, stripe_line

D = Decimal
STAFF = Staff(
    (
        Person("alice", "Alice A.", frozenset({"alice-gh"}), "senior"),
        Person("bob", "", frozenset({"bob-gh"}), None, (), (DatedRate(D("40")),)),
    ),
    (Role("senior", "Senior developer", (DatedRate(D("150")),), (DatedRate(D("70")),)),),
)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("alice: 3, bob: 1.5", (("alice", D("3")), ("bob", D("1.5")))),
        ("alice=2h; bob = 0.5", (("alice", D("2")), ("bob", D("0.5")))),
        (
            "alice@x.example: 1\nbob@x.example: 2",
            (("alice@x.example", D("1")), ("bob@x.example", D("2"))),
        ),
        ("", ()),
        (None, ()),
        ("alice: lots", ()),
        ("alice: -1", ()),
        ("just text", ()),
    ],
)
def test_hours_by_person_field(text: str | None, expected: tuple[tuple[str, Decimal], ...]) -> None:
    assert parse_hours_by_person(text) == expected


@pytest.mark.parametrize(
    "grouping,person,role,expected",
    [
        (LineGrouping.ITEM, "alice", "senior", ""),
        (LineGrouping.ITEM_PERSON, "alice", "senior", "Alice A. (Senior developer)"),
        (LineGrouping.ITEM_PERSON, "bob", None, "bob"),
        (LineGrouping.ITEM_PERSON, "zed-gh", None, "zed-gh"),
        (LineGrouping.ROLE, "alice", "senior", "Senior developer"),
        (LineGrouping.ROLE, "bob", None, "unassigned role"),
        (LineGrouping.ITEM_PERSON, None, None, ""),
    ],
)
def test_line_who(
    grouping: LineGrouping, person: str | None, role: str | None, expected: str
) -> None:
    assert line_who(grouping, person, role, STAFF) == expected


def test_stripe_line_names_the_person_and_keeps_the_metadata() -> None:
    source = LineSource(
        1,
        "file:web:7#time-1@alice",
        "file:web:7",
        EntryKind.TIME,
        D("2"),
        D("150"),
        D("300"),
        "EUR",
        "",
        "Checkout",
        "web",
        "7",
        "",
        datetime(2026, 11, 2, tzinfo=UTC),
        person="alice",
        role="senior",
    )
    line = stripe_line(
        source, StripeCustomer("acme", "cus_1"), grouping=LineGrouping.ITEM_PERSON, staff=STAFF
    )
    assert line.description == "Checkout [web 7] Alice A. (Senior developer): 2 h × 150.00 EUR"
    assert dict(line.metadata)["person"] == "alice" and dict(line.metadata)["role"] == "senior"
    plain = stripe_line(source, StripeCustomer("acme", "cus_1"))
    assert plain.description == "Checkout [web 7] 2 h × 150.00 EUR"


def test_people_without_rate() -> None:
    seen = {"alice-gh": {"web"}, "zed-gh": {"web", "ops"}}
    assert people_without_rate(STAFF, seen, date(2026, 11, 1)) == [
        (
            "bob",
            "no bill rate of their own or of their role: billed at the board, client or "
            "default rate",
        ),
        (
            "zed-gh",
            "not a configured person (seen on ops, web): billed at the board, client "
            "or default rate, no cost",
        ),
    ]


def entry(
    kind: EntryKind,
    state: EntryState,
    hours: str,
    amount: str | None,
    cost: str | None,
    person: str | None = "alice",
    day: int = 10,
) -> ProfitEntry:
    return ProfitEntry(
        "acme",
        "web",
        "S1",
        person,
        kind,
        state,
        D(hours),
        D(amount) if amount else None,
        D(cost) if cost else None,
        "EUR",
        f"k{day}{hours}",
        "T",
        date(2026, 11, day),
    )


PROFIT = [
    entry(EntryKind.TIME, EntryState.PAID, "2", "300", "140"),
    entry(EntryKind.TIME, EntryState.IN_PROGRESS, "5", "500", "200"),  # not counted
    entry(EntryKind.TIME, EntryState.NEEDS_REVIEW, "-1", "-150", "-70"),  # not counted
    entry(EntryKind.COST, EntryState.NON_BILLABLE, "1", None, "70"),
    entry(EntryKind.MILESTONE, EntryState.READY, "3", "100", "120", person="bob", day=20),
    entry(EntryKind.TIME, EntryState.READY, "1", "100", None, person="zed", day=20),
]


def test_profitability_sums_and_effective_rate() -> None:
    (acme,) = profitability(PROFIT, Dimension.CLIENT)
    assert (acme.hours, acme.billable_hours, acme.uncosted_hours) == (D(7), D(6), D(1))
    assert (str(acme.revenue.amount), str(acme.cost.amount), str(acme.margin.amount)) == (
        "500.00",
        "330.00",
        "170.00",
    )
    assert str(acme.margin_percent) == "34.0"
    assert acme.effective_rate is not None and str(acme.effective_rate.amount) == "71.43"
    people = {p.key: p for p in profitability(PROFIT, Dimension.PERSON)}
    assert set(people) == {"alice", "bob", "zed"}
    assert str(people["alice"].effective_rate.amount) == "100.00"  # type: ignore[union-attr]
    early = profitability(PROFIT, Dimension.PERSON, ProfitFilter(end=date(2026, 11, 15)))
    assert [p.key for p in early] == ["alice"]
    (m,) = milestones(PROFIT)
    assert not m.profit.made_money and str(m.profit.margin.amount) == "-20.00"


def test_the_commented_people_example_loads(tmp_path: object) -> None:
    """config.example.toml's commented [[roles]] / [[people]] work once uncommented."""
    from pathlib import Path

    from sync.settings import load_settings
    from tests.conftest import REPO_ROOT

    text = (REPO_ROOT / "config.example.toml").read_text(encoding="utf-8")
    head, _, tail = text.partition("# [[roles]]")
    lines = ["[[roles]]"] + [
        line[2:] if line.startswith("# ") else "" if line == "#" else line
        for line in tail.splitlines()
    ]
    path = Path(str(tmp_path)) / "kanvoice.toml"
    path.write_text(head + "\n".join(lines), encoding="utf-8")
    settings = load_settings(path)
    staff = settings.board_policies()["acme-web"].staff
    assert [p.key for p in staff.people] == ["alice", "bob"]
    alice = staff.worker("Alice-GH")
    assert alice.person is not None and alice.role is not None
    assert alice.role.label == "Senior developer"
