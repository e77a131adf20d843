"""Which entries share a Stripe line (`mapping.line_groups`): tables and properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapping.domain import EntryKind, LineGrouping
from mapping.line_groups import GroupEntry, group_lines, line_key

ITEM, PERSON, ROLE = LineGrouping.ITEM, LineGrouping.ITEM_PERSON, LineGrouping.ROLE


def e(
    entry_id: int,
    item: str = "gh:web:1",
    person: str | None = "alice",
    role: str | None = "senior",
    rate: str | None = "150",
    hours: str = "2",
    kind: EntryKind = EntryKind.TIME,
    line: int | None = None,
    currency: str = "EUR",
) -> GroupEntry:
    r = Decimal(rate) if rate is not None else None
    return GroupEntry(
        entry_id=entry_id,
        item_key=item,
        kind=kind,
        hours=Decimal(hours),
        amount=Decimal(hours) * (r or Decimal(0)),
        rate=r,
        currency=currency,
        person=person,
        role=role,
        line=line,
    )


def shape(plans: tuple[object, ...]) -> list[tuple[int, ...]]:
    return [p.entries for p in plans]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("grouping", "entries", "lines"),
    [
        # "item": every entry its own line, whoever did the work.
        (ITEM, [e(1), e(2)], [(1,), (2,)]),
        # item_person: the same person's entries of one item at one rate merge...
        (PERSON, [e(1), e(2, hours="1.5")], [(1, 2)]),
        # ...not two people, not two items, not two rates, not two currencies.
        (PERSON, [e(1), e(2, person="carol")], [(1,), (2,)]),
        (PERSON, [e(1), e(2, item="gh:web:2")], [(1,), (2,)]),
        (PERSON, [e(1), e(2, rate="160")], [(1,), (2,)]),
        (PERSON, [e(1), e(2, currency="USD")], [(1,), (2,)]),
        # role: two people of one role at one rate merge; another role does not.
        (
            ROLE,
            [e(1), e(2, person="carol"), e(3, person="bob", role="junior", rate="90")],
            [(1, 2), (3,)],
        ),
        (ROLE, [e(1), e(2, person="carol", rate="160")], [(1,), (2,)]),
        # role, nobody's role known: each person's hours stay their own.
        (ROLE, [e(1, role=None), e(2, person="carol", role=None), e(3, role=None)], [(1, 3), (2,)]),
        # Never merged: milestones, adjustments, whole-item entries, entries without rate.
        (PERSON, [e(1, kind=EntryKind.MILESTONE), e(2, kind=EntryKind.MILESTONE)], [(1,), (2,)]),
        (PERSON, [e(1, kind=EntryKind.ADJUSTMENT), e(2, kind=EntryKind.ADJUSTMENT)], [(1,), (2,)]),
        (ROLE, [e(1, person=None), e(2, person=None)], [(1,), (2,)]),
        (PERSON, [e(1, rate=None), e(2, rate=None)], [(1,), (2,)]),
        # Rates equal as numbers merge (150 and 150.00).
        (PERSON, [e(1, rate="150"), e(2, rate="150.00")], [(1, 2)]),
    ],
)
def test_grouping_table(
    grouping: LineGrouping, entries: list[GroupEntry], lines: list[tuple[int, ...]]
) -> None:
    assert shape(group_lines(entries, grouping)) == lines


def test_new_entries_join_the_line_already_on_the_draft() -> None:
    # Entry 5 leads a line on the draft (with 7); 9 and 12 are new, same person and rate.
    entries = [e(5, line=5), e(7, line=5), e(9), e(12), e(3, person="bob", line=3)]
    plans = group_lines(entries, PERSON)
    assert shape(plans) == [(3,), (5, 7, 9, 12)]
    merged = plans[1]
    assert (merged.lead, merged.hours, merged.amount, merged.rate) == (
        5,
        Decimal(8),
        Decimal(1200),
        Decimal(150),
    )


def test_existing_lines_are_never_merged_into_each_other() -> None:
    # Drafted while grouping was "item": two lines of one person stay two lines; a new
    # entry joins the lowest.
    entries = [e(2, line=2), e(4, line=4), e(6)]
    assert shape(group_lines(entries, PERSON)) == [(2, 6), (4,)]


def test_a_line_is_led_by_its_lowest_new_entry() -> None:
    plans = group_lines([e(8), e(3), e(5)], PERSON)
    assert [(p.lead, p.entries) for p in plans] == [(3, (3, 5, 8))]


def test_line_key_names_what_the_entries_share() -> None:
    assert line_key(e(1), ROLE) == ("gh:web:1", "role", "senior", "150", "EUR")
    assert line_key(e(1), PERSON) == ("gh:web:1", "item_person", "alice", "150", "EUR")
    assert line_key(e(1), ITEM) is None


entry_strategy = st.builds(
    e,
    entry_id=st.integers(1, 10_000),
    item=st.sampled_from(["a", "b"]),
    person=st.sampled_from(["alice", "bob", None]),
    role=st.sampled_from(["senior", "junior", None]),
    rate=st.sampled_from(["90", "150", "150.0", None]),
    hours=st.sampled_from(["0.25", "1", "2.5"]),
    kind=st.sampled_from([EntryKind.TIME, EntryKind.MILESTONE]),
)


@given(
    st.lists(entry_strategy, max_size=30, unique_by=lambda x: x.entry_id),
    st.sampled_from(list(LineGrouping)),
)
def test_every_entry_is_on_exactly_one_line_and_the_money_adds_up(
    entries: list[GroupEntry], grouping: LineGrouping
) -> None:
    plans = group_lines(entries, grouping)
    placed = [i for p in plans for i in p.entries]
    assert sorted(placed) == sorted(x.entry_id for x in entries)
    assert sum((p.amount for p in plans), Decimal(0)) == sum(
        (x.amount for x in entries), Decimal(0)
    )
    by_id = {x.entry_id: x for x in entries}
    for plan in plans:
        assert plan.entries[0] == plan.lead
        rates = {by_id[i].rate for i in plan.entries}
        assert len(rates) == 1  # only entries of the same rate merge
        if plan.merged:
            assert grouping is not LineGrouping.ITEM
            assert {by_id[i].item_key for i in plan.entries} == {by_id[plan.lead].item_key}
