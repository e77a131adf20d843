"""The billing core: compare a board snapshot with what the ledger holds, return actions.

Pure: no I/O, no clock. The ledger applies the actions in one transaction; applying
the plan for a snapshot the ledger already reflects yields only `Skip`.

Money rules (see DESIGN.md, "Billing rules"):
- time and materials: at Done, bill rounding(hours) minus the hours already settled
  for the item, at the rate in force then (frozen on the entry);
- fixed price: the milestone amount once, on the first Done; hours kept as cost;
- non-billable: hours kept as cost, never an amount;
- hours lowered: entries not yet approved are reduced; what remains beyond them
  becomes a `needs_review` adjustment, never an automatic credit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from mapping.domain import (
    EDITABLE_STATES,
    BillableEntry,
    BillingType,
    BoardItem,
    BoardPolicy,
    EntryKind,
    EntryState,
    StateCategory,
    entry_key,
)
from mapping.money import Money
from mapping.rules import is_done, resolve_billing_type, resolve_rate
from mapping.stripe_lines import line_amount, next_seq

_KINDS_FOR = {
    BillingType.TIME_AND_MATERIALS: frozenset({EntryKind.TIME, EntryKind.ADJUSTMENT}),
    BillingType.FIXED_PRICE: frozenset({EntryKind.MILESTONE}),
    BillingType.NON_BILLABLE: frozenset({EntryKind.COST}),
}


@dataclass(frozen=True, slots=True)
class HeldItem:
    """What the ledger holds for one item: the last applied snapshot and its entries."""

    revision: int
    fingerprint: str
    column: str
    state_category: StateCategory
    entries: tuple[BillableEntry, ...] = ()


# --- actions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordItem:
    """Store the snapshot as the item's current state."""

    item: BoardItem
    fingerprint: str
    billing_type: BillingType
    client_key: str
    done: bool


@dataclass(frozen=True, slots=True)
class RecordTransition:
    item_key: str
    from_column: str | None
    to_column: str
    from_category: StateCategory | None
    to_category: StateCategory
    at: datetime


@dataclass(frozen=True, slots=True)
class CreateEntry:
    """A new entry. Its `entry_key` is unique in the ledger: recording it twice fails."""

    entry: BillableEntry
    done_at: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class UpdateEntry:
    """New hours/rate/amount for an entry that is not on a finalized invoice."""

    entry_key: str
    hours: Decimal
    rate: Decimal | None
    amount: Money | None
    reason: str
    done_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChangeEntryState:
    entry_key: str
    from_state: EntryState
    to_state: EntryState
    reason: str


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str


@dataclass(frozen=True, slots=True)
class Conflict(Skip):
    """Same revision as the ledger holds, different content: two edits in one second,
    or a poll racing a webhook. Arrival order must not decide which one is billed, so
    nothing is applied; the engine logs and counts it and, for a board that can be read
    again, re-reads the item and plans that snapshot with `reread=True`."""

    revision: int = 0


Action = RecordItem | RecordTransition | CreateEntry | UpdateEntry | ChangeEntryState | Skip


def fingerprint(item: BoardItem) -> str:
    """A stable digest of everything billing reads from a snapshot (not its revision)."""
    # The enums are StrEnums: joined as their values.
    parts = (
        item.title,
        item.url,
        item.column,
        item.state_category,
        str(item.hours),
        item.billing_type or "",
        "\x1f".join(item.labels),
        "\x1f".join(item.assignees),
        item.iteration or "",
        str(item.rate),
        str(item.milestone_amount),
        item.done_at.isoformat() if item.done_at else "",
    )
    return hashlib.sha1("\x1e".join(parts).encode(), usedforsecurity=False).hexdigest()


def plan(
    item: BoardItem, held: HeldItem | None, policy: BoardPolicy, *, reread: bool = False
) -> tuple[Action, ...]:
    """Everything the ledger must do to reflect `item`, given what it holds.

    A snapshot older than the held revision, or identical to it, is skipped: so
    replays, duplicates and out-of-order deliveries change nothing. One with the held
    revision but other content is a `Conflict` and changes nothing either, unless it is
    `reread`: a snapshot read from the board on purpose to settle such a conflict,
    which is the board's current truth and is applied.
    """
    digest = fingerprint(item)
    if held is not None:
        if item.revision < held.revision:
            return (Skip(f"stale: revision {item.revision} < held {held.revision}"),)
        if item.revision == held.revision and digest == held.fingerprint:
            return (Skip("unchanged"),)
        if item.revision == held.revision and not reread:
            return (
                Conflict(
                    f"conflict: revision {item.revision} already held with other content",
                    item.revision,
                ),
            )

    billing_type = resolve_billing_type(item, policy)
    done = is_done(item, policy)
    actions: list[Action] = [RecordItem(item, digest, billing_type, policy.client.key, done)]

    if held is None or held.column != item.column or held.state_category != item.state_category:
        moved_done = done and item.done_at is not None
        actions.append(
            RecordTransition(
                item_key=item.key,
                from_column=held.column if held else None,
                to_column=item.column,
                from_category=held.state_category if held else None,
                to_category=item.state_category,
                at=item.done_at if moved_done and item.done_at else item.updated_at,
            )
        )

    entries = held.entries if held else ()
    if item.state_category is StateCategory.REMOVED:
        # Removed items are never billed: whatever was only in progress is dropped.
        actions.extend(_void_open(entries, frozenset(), "item removed from the board"))
        return tuple(actions)

    actions.extend(_void_open(entries, _KINDS_FOR[billing_type], "billing type changed"))
    if billing_type is BillingType.TIME_AND_MATERIALS:
        actions.extend(_plan_time(item, entries, policy, done))
    elif billing_type is BillingType.FIXED_PRICE:
        actions.extend(_plan_milestone(item, entries, policy, done))
    else:
        actions.extend(_plan_cost(item, entries, policy, done))
    return tuple(actions)


def _void_open(
    entries: tuple[BillableEntry, ...], keep_kinds: frozenset[EntryKind], reason: str
) -> list[Action]:
    """In-progress entries of other kinds are zeroed and voided (nothing was billed)."""
    actions: list[Action] = []
    for entry in entries:
        if entry.state is EntryState.IN_PROGRESS and entry.kind not in keep_kinds:
            actions.extend(_zero_and_void(entry, reason))
    return actions


def _zero_and_void(entry: BillableEntry, reason: str) -> list[Action]:
    zero = Money.zero(entry.amount.currency).quantized() if entry.amount else None
    return [
        UpdateEntry(entry.entry_key, Decimal(0), entry.rate, zero, reason),
        ChangeEntryState(entry.entry_key, entry.state, EntryState.VOIDED, reason),
    ]


def _next_seq(entries: tuple[BillableEntry, ...], kind: EntryKind) -> int:
    return next_seq(e.seq for e in entries if e.kind is kind)


_money = line_amount  # amount = hours × rate, one rule (mapping.stripe_lines)


def settled_hours(entries: tuple[BillableEntry, ...]) -> Decimal:
    """Hours of an item already billed, being billed, or decided on by a person."""
    return sum(
        (
            e.hours
            for e in entries
            if e.kind in (EntryKind.TIME, EntryKind.ADJUSTMENT) and e.counts_as_settled
        ),
        Decimal(0),
    )


def _plan_time(
    item: BoardItem, entries: tuple[BillableEntry, ...], policy: BoardPolicy, done: bool
) -> list[Action]:
    currency = policy.client.currency
    on = (item.done_at or item.updated_at).date()
    resolved = resolve_rate(item, policy, on)
    rate = resolved.rate if resolved else None
    target = policy.effective_rounding.apply(item.tracked_hours)
    delta = target - settled_hours(entries)
    open_entry = next(
        (e for e in entries if e.kind is EntryKind.TIME and e.state is EntryState.IN_PROGRESS),
        None,
    )
    actions: list[Action] = []

    if not done:
        open_hours = max(delta, Decimal(0))
        if open_entry is None:
            if open_hours > 0:
                seq = _next_seq(entries, EntryKind.TIME)
                actions.append(
                    CreateEntry(
                        _entry(
                            item,
                            EntryKind.TIME,
                            seq,
                            EntryState.IN_PROGRESS,
                            open_hours,
                            rate,
                            _money(open_hours, rate, currency),
                        ),
                        None,
                        "hours tracked",
                    )
                )
        elif open_entry.hours != open_hours or open_entry.rate != rate:
            actions.append(
                UpdateEntry(
                    open_entry.entry_key,
                    open_hours,
                    rate,
                    _money(open_hours, rate, currency),
                    "hours tracked",
                )
            )
        return actions

    done_at = item.done_at or item.updated_at
    if delta > 0:
        amount = _money(delta, rate, currency)
        # Without a rate nobody can price the line: a person must look at it.
        to_state = EntryState.READY if rate is not None else EntryState.NEEDS_REVIEW
        reason = "done" if rate is not None else "done, but no rate is configured"
        if open_entry is not None:
            actions.append(UpdateEntry(open_entry.entry_key, delta, rate, amount, reason, done_at))
            actions.append(
                ChangeEntryState(open_entry.entry_key, open_entry.state, to_state, reason)
            )
        else:
            seq = _next_seq(entries, EntryKind.TIME)
            actions.append(
                CreateEntry(
                    _entry(item, EntryKind.TIME, seq, to_state, delta, rate, amount),
                    done_at,
                    reason,
                )
            )
        return actions

    if open_entry is not None:
        actions.extend(_zero_and_void(open_entry, "done with no new hours"))
    if delta < 0:
        actions.extend(_lower_hours(item, entries, -delta, currency, done_at))
    return actions


def _lower_hours(
    item: BoardItem,
    entries: tuple[BillableEntry, ...],
    excess: Decimal,
    currency: str,
    done_at: datetime,
) -> list[Action]:
    """Take `excess` hours back: from lines not yet approved first (newest first), and
    what remains as a negative adjustment for a person to review (never a credit)."""
    actions: list[Action] = []
    remaining = excess
    editable = sorted(
        (e for e in entries if e.kind is EntryKind.TIME and e.state in EDITABLE_STATES),
        key=lambda e: e.seq,
        reverse=True,
    )
    for entry in editable:
        if remaining <= 0:
            break
        cut = min(entry.hours, remaining)
        remaining -= cut
        if cut == entry.hours:
            actions.extend(_zero_and_void(entry, "hours lowered before invoicing"))
        else:
            left = entry.hours - cut
            actions.append(
                UpdateEntry(
                    entry.entry_key,
                    left,
                    entry.rate,
                    _money(left, entry.rate, currency),
                    "hours lowered before invoicing",
                )
            )
    if remaining > 0:
        billed = [e for e in entries if e.kind is EntryKind.TIME and e.rate is not None]
        rate = billed[-1].rate if billed else None
        seq = _next_seq(entries, EntryKind.ADJUSTMENT)
        actions.append(
            CreateEntry(
                _entry(
                    item,
                    EntryKind.ADJUSTMENT,
                    seq,
                    EntryState.NEEDS_REVIEW,
                    -remaining,
                    rate,
                    _money(-remaining, rate, currency),
                ),
                done_at,
                "hours lowered after invoicing: review, no automatic credit",
            )
        )
    return actions


def _plan_milestone(
    item: BoardItem, entries: tuple[BillableEntry, ...], policy: BoardPolicy, done: bool
) -> list[Action]:
    milestones = [e for e in entries if e.kind is EntryKind.MILESTONE]
    if any(e.counts_as_settled for e in milestones):
        return []  # billed once, on the first Done; later hours are cost only
    currency = policy.client.currency
    amount = Money(item.milestone_amount, currency).quantized() if item.milestone_amount else None
    hours = item.tracked_hours
    open_entry = next((e for e in milestones if e.state is EntryState.IN_PROGRESS), None)
    if not done:
        if open_entry is None:
            return [
                CreateEntry(
                    _entry(
                        item, EntryKind.MILESTONE, 1, EntryState.IN_PROGRESS, hours, None, amount
                    ),
                    None,
                    "milestone in progress",
                )
            ]
        if open_entry.hours != hours or open_entry.amount != amount:
            return [UpdateEntry(open_entry.entry_key, hours, None, amount, "milestone in progress")]
        return []
    done_at = item.done_at or item.updated_at
    to_state = EntryState.READY if amount is not None else EntryState.NEEDS_REVIEW
    reason = "milestone done" if amount else "fixed price item done without a milestone amount"
    if open_entry is None:
        return [
            CreateEntry(
                _entry(item, EntryKind.MILESTONE, 1, to_state, hours, None, amount), done_at, reason
            )
        ]
    return [
        UpdateEntry(open_entry.entry_key, hours, None, amount, reason, done_at),
        ChangeEntryState(open_entry.entry_key, open_entry.state, to_state, reason),
    ]


def _plan_cost(
    item: BoardItem, entries: tuple[BillableEntry, ...], policy: BoardPolicy, done: bool
) -> list[Action]:
    cost = next((e for e in entries if e.kind is EntryKind.COST), None)
    hours = item.tracked_hours
    if cost is None:
        if hours <= 0:
            return []
        return [
            CreateEntry(
                _entry(item, EntryKind.COST, 1, EntryState.NON_BILLABLE, hours, None, None),
                item.done_at if done else None,
                "non-billable hours tracked as cost",
            )
        ]
    if cost.hours != hours:
        return [UpdateEntry(cost.entry_key, hours, None, None, "non-billable hours tracked")]
    return []


def _entry(
    item: BoardItem,
    kind: EntryKind,
    seq: int,
    state: EntryState,
    hours: Decimal,
    rate: Decimal | None,
    amount: Money | None,
) -> BillableEntry:
    return BillableEntry(
        entry_key=entry_key(item.key, kind, seq),
        item_key=item.key,
        kind=kind,
        seq=seq,
        state=state,
        hours=hours,
        rate=rate,
        amount=amount,
        description=item.title,
    )


def evolve(held: HeldItem | None, actions: tuple[Action, ...]) -> HeldItem | None:
    """What the ledger holds after applying `actions` (for planning the next snapshot
    of the same item within one batch, and for tests that need no database)."""
    if held is None and not any(isinstance(a, RecordItem) for a in actions):
        return None
    revision = held.revision if held else 0
    digest = held.fingerprint if held else ""
    column = held.column if held else ""
    category = held.state_category if held else StateCategory.PROPOSED
    entries = {e.entry_key: e for e in held.entries} if held else {}
    for action in actions:
        if isinstance(action, RecordItem):
            revision = action.item.revision
            digest = action.fingerprint
            column = action.item.column
            category = action.item.state_category
        elif isinstance(action, CreateEntry):
            entries[action.entry.entry_key] = action.entry
        elif isinstance(action, UpdateEntry):
            e = entries[action.entry_key]
            entries[action.entry_key] = BillableEntry(
                e.entry_key,
                e.item_key,
                e.kind,
                e.seq,
                e.state,
                action.hours,
                action.rate,
                action.amount,
                e.description,
            )
        elif isinstance(action, ChangeEntryState):
            e = entries[action.entry_key]
            entries[action.entry_key] = BillableEntry(
                e.entry_key,
                e.item_key,
                e.kind,
                e.seq,
                action.to_state,
                e.hours,
                e.rate,
                e.amount,
                e.description,
            )
    return HeldItem(revision, digest, column, category, tuple(entries.values()))
