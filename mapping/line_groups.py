"""Which entries share one Stripe line: the client's `line_grouping`, as a pure function.

- ``item``: one line per entry (as before people existed: an item's per-person
  entries stay separate lines, each with its own rate).
- ``item_person``: one line per item × person × rate: an item's entries of the same
  person at the same rate (re-opened and Done again, several sprints) merge.
- ``role``: one line per item × role × rate: the senior hours of Alice and Carol on
  one item merge when both are billed at the same rate.

Only time entries of a person merge, and only at the same rate and currency:
milestones, adjustments and entries of the whole item (no person) are always lines
of their own. A merged line bills the sum of its entries' frozen amounts (each
already hours × rate in the currency's units) for the sum of their hours, so every
entry is billed exactly once and the draft's total is the ledger's.

No I/O, no clock: the shell loads the entries, asks, and records the answer in the
ledger's line → entries link (``line_entries``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from mapping.domain import EntryKind, LineGrouping

#: What entries of one line have in common (None: the entry never merges).
LineKey = tuple[str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class GroupEntry:
    """An entry as grouping sees it. `line` is the lead entry id of the line it is
    already on (a drafted entry); None for an entry not on a line yet (ready)."""

    entry_id: int
    item_key: str
    kind: EntryKind
    hours: Decimal
    amount: Decimal
    rate: Decimal | None
    currency: str
    person: str | None = None
    role: str | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class LinePlan:
    """One Stripe line: its lead entry (whose id the line's idempotency keys and
    metadata carry), every entry it covers (lead first), and their sums."""

    lead: int
    entries: tuple[int, ...]
    hours: Decimal
    amount: Decimal
    rate: Decimal | None
    key: LineKey | None

    @property
    def merged(self) -> bool:
        return len(self.entries) > 1


def line_key(entry: GroupEntry, grouping: LineGrouping) -> LineKey | None:
    """The key entries of one line share, or None when the entry is a line alone."""
    if (
        grouping is LineGrouping.ITEM
        or entry.kind is not EntryKind.TIME
        or entry.person is None
        or entry.rate is None
    ):
        return None
    who = entry.person if grouping is LineGrouping.ITEM_PERSON else (entry.role or "")
    if grouping is LineGrouping.ROLE and not who:
        who = f"person:{entry.person}"  # no role: the person's hours stay their own
    rate = entry.rate.normalize()
    return (entry.item_key, grouping.value, who, f"{rate:f}", entry.currency.upper())


def group_lines(entries: Iterable[GroupEntry], grouping: LineGrouping) -> tuple[LinePlan, ...]:
    """The draft's lines: the lines entries are already on stay as they are, and each
    new entry joins the line of its key (the existing one with the lowest lead id,
    else the first new one), or starts a line of its own. Lines come out in lead order.

    An existing line is never merged into another (its Stripe line exists), and an
    entry already on a line never moves: the answer only adds entries to lines.
    """
    ordered = sorted(entries, key=lambda e: e.entry_id)
    by_id = {e.entry_id: e for e in ordered}
    members: dict[int, list[GroupEntry]] = {}
    keys: dict[int, LineKey | None] = {}
    for entry in ordered:
        if entry.line is not None:
            lead = entry.line if entry.line in by_id else entry.entry_id
            members.setdefault(lead, []).append(entry)
    for lead in members:
        keys[lead] = line_key(by_id[lead], grouping)
    open_lines: dict[LineKey, int] = {}
    for lead in sorted(members):
        key = keys[lead]
        if key is not None:
            open_lines.setdefault(key, lead)
    for entry in ordered:
        if entry.line is not None:
            continue
        key = line_key(entry, grouping)
        joined = open_lines.get(key) if key is not None else None
        if joined is None:
            joined = entry.entry_id
            keys[joined] = key
            if key is not None:
                open_lines[key] = joined
        members.setdefault(joined, []).append(entry)
    plans: list[LinePlan] = []
    for lead in sorted(members):
        group = sorted(members[lead], key=lambda e: (e.entry_id != lead, e.entry_id))
        plans.append(
            LinePlan(
                lead=lead,
                entries=tuple(e.entry_id for e in group),
                hours=sum((e.hours for e in group), Decimal(0)),
                amount=sum((e.amount for e in group), Decimal(0)),
                rate=by_id[lead].rate,
                key=keys[lead],
            )
        )
    return tuple(plans)
