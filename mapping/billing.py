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
from dataclasses import dataclass, replace
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
    Worker,
    entry_key,
)
from mapping.frozen import quick_init
from mapping.money import Money, tidy_decimal
from mapping.rules import is_done, resolve_billing_type, resolve_cost_rate, resolve_rate
from mapping.stripe_lines import line_amount, next_seq

_KINDS_FOR = {
    BillingType.TIME_AND_MATERIALS: frozenset({EntryKind.TIME, EntryKind.ADJUSTMENT}),
    BillingType.FIXED_PRICE: frozenset({EntryKind.MILESTONE}),
    BillingType.NON_BILLABLE: frozenset({EntryKind.COST}),
}


@quick_init
@dataclass(frozen=True, slots=True)
class HeldItem:
    """What the ledger holds for one item: the last applied snapshot and its entries."""

    revision: int
    fingerprint: str
    column: str
    state_category: StateCategory
    entries: tuple[BillableEntry, ...] = ()


# --- actions -----------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class RecordItem:
    """Store the snapshot as the item's current state."""

    item: BoardItem
    fingerprint: str
    billing_type: BillingType
    client_key: str
    done: bool


@quick_init
@dataclass(frozen=True, slots=True)
class RecordTransition:
    item_key: str
    from_column: str | None
    to_column: str
    from_category: StateCategory | None
    to_category: StateCategory
    at: datetime


@quick_init
@dataclass(frozen=True, slots=True)
class CreateEntry:
    """A new entry. Its `entry_key` is unique in the ledger: recording it twice fails."""

    entry: BillableEntry
    done_at: datetime | None
    reason: str


@quick_init
@dataclass(frozen=True, slots=True)
class UpdateEntry:
    """New hours/rate/amount for an entry that is not on a finalized invoice."""

    entry_key: str
    hours: Decimal
    rate: Decimal | None
    amount: Money | None
    reason: str
    done_at: datetime | None = None
    cost_rate: Decimal | None = None
    cost: Money | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class ChangeEntryState:
    entry_key: str
    from_state: EntryState
    to_state: EntryState
    reason: str


@quick_init
@dataclass(frozen=True, slots=True)
class Skip:
    reason: str


@quick_init
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
    parts: tuple[str, ...] = (
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
    if item.hours_by_person:  # only when the board has the field: old digests unchanged
        parts += ("\x1f".join(f"{who}={hours}" for who, hours in item.hours_by_person),)
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
                item.key,
                held.column if held else None,
                item.column,
                held.state_category if held else None,
                item.state_category,
                item.done_at if moved_done and item.done_at else item.updated_at,
            )
        )

    entries = held.entries if held else ()
    if item.state_category is StateCategory.REMOVED:
        # Removed items are never billed: whatever was only in progress is dropped.
        actions.extend(_void_open(entries, frozenset(), "item removed from the board"))
        return tuple(actions)

    if entries:
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
    zero_cost = Money.zero(entry.cost.currency).quantized() if entry.cost else None
    return [
        UpdateEntry(
            entry.entry_key,
            Decimal(0),
            entry.rate,
            zero,
            reason,
            cost_rate=entry.cost_rate,
            cost=zero_cost,
        ),
        ChangeEntryState(entry.entry_key, entry.state, EntryState.VOIDED, reason),
    ]


def _next_seq(entries: tuple[BillableEntry, ...], kind: EntryKind) -> int:
    if not entries:  # a new item (the common case): the first number
        return 1
    return next_seq(e.seq for e in entries if e.kind is kind)


_money = line_amount  # amount = hours × rate, one rule (mapping.stripe_lines)


_ANYONE = object()
_ZERO = Decimal(0)


def settled_hours(entries: tuple[BillableEntry, ...], person: object = _ANYONE) -> Decimal:
    """Hours of an item already billed, being billed, or decided on by a person (of one
    worker's share, when `person` is given)."""
    total = _ZERO
    for e in entries:
        if (
            e.kind in _HOURLY_KINDS
            and e.counts_as_settled
            and (person is _ANYONE or e.person == person)
        ):
            total += e.hours
    return total


_HOURLY_KINDS = frozenset({EntryKind.TIME, EntryKind.ADJUSTMENT})


def split_hours(total: Decimal, weights: list[Decimal], increment_minutes: int) -> list[Decimal]:
    """`total` hours shared by weight, in whole rounding increments (largest remainder;
    ties go to the first in board order); whatever is less than one increment goes to
    the first share. The shares always add up to `total` exactly, so an item is never
    billed more (or less) than its rounded total. No positive weight: equal shares."""
    if not weights:
        return []
    if sum(weights, Decimal(0)) <= 0:
        weights = [Decimal(1)] * len(weights)
    positive = [max(w, Decimal(0)) for w in weights]
    total_weight = sum(positive, Decimal(0))
    minutes = total * 60
    units = int(minutes // increment_minutes) if minutes > 0 else 0
    exact = [units * w / total_weight for w in positive]
    whole = [int(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - whole[i]), i))
    for i in order[: units - sum(whole)]:
        whole[i] += 1
    shares = [_tidy_hours(Decimal(w * increment_minutes) / 60) for w in whole]
    first = next(i for i, w in enumerate(positive) if w > 0)
    shares[first] = tidy_decimal(
        total - sum((h for i, h in enumerate(shares) if i != first), Decimal(0))
    )
    return shares


def _tidy_hours(hours: Decimal) -> Decimal:
    return tidy_decimal(hours.quantize(Decimal("0.000001")))


def _workers(item: BoardItem, policy: BoardPolicy) -> list[Worker]:
    """Who shares the item's hours: the "Hours by person" field's people when the board
    has one, else the assignees, in board order. Empty without configured people."""
    staff = policy.staff
    if not staff.people:  # (not `Staff.__bool__`: a call per snapshot)
        return []
    names = [who for who, _ in item.hours_by_person] or list(item.assignees)
    found: dict[str, Worker] = {}
    for name in names:
        if name.strip():
            worker = staff.worker(name)
            found.setdefault(worker.key, worker)
    return list(found.values())


def _time_shares(
    item: BoardItem, entries: tuple[BillableEntry, ...], policy: BoardPolicy, delta: Decimal
) -> list[tuple[Worker | None, Decimal]]:
    """The new hours of an item (`delta`, never negative) per worker.

    Without people configured, or with nobody assigned: one share, the item's (as
    before people existed). With an "Hours by person" field, each person's weight is
    their rounded hours there minus what is already settled for them, so a re-opened
    item bills each person only their new hours; otherwise equal shares."""
    workers = _workers(item, policy)
    if not workers:
        return [(None, delta)]
    rounding = policy.effective_rounding
    if item.hours_by_person:
        by_field: dict[str, Decimal] = {}
        for who, hours in item.hours_by_person:
            key = policy.staff.worker(who).key
            by_field[key] = by_field.get(key, Decimal(0)) + hours
        weights = [
            rounding.apply(by_field.get(w.key, Decimal(0))) - settled_hours(entries, w.key)
            for w in workers
        ]
    else:
        weights = [Decimal(1)] * len(workers)
    shares = split_hours(delta, weights, rounding.increment_minutes)
    return list(zip(workers, shares, strict=True))


_Priced = tuple[Decimal | None, Money | None, Decimal | None, Money | None]


def _priced(
    item: BoardItem,
    policy: BoardPolicy,
    worker: Worker | None,
    hours: Decimal,
) -> _Priced:
    """(rate, amount, cost rate, cost) of `hours` of `worker` on `item`, on the day it
    reached Done (or of the snapshot, while in progress)."""
    currency = policy.client.currency
    on = (item.done_at or item.updated_at).date()
    resolved = resolve_rate(item, policy, on, worker)
    rate = resolved.rate if resolved else None
    cost_rate = resolve_cost_rate(policy, on, worker)
    return rate, _money(hours, rate, currency), cost_rate, _money(hours, cost_rate, currency)


def _plan_time(
    item: BoardItem, entries: tuple[BillableEntry, ...], policy: BoardPolicy, done: bool
) -> list[Action]:
    currency = policy.client.currency
    target = policy.effective_rounding.apply(item.tracked_hours)
    delta = target - settled_hours(entries)
    open_entries = {
        e.person: e
        for e in entries
        if e.kind is EntryKind.TIME and e.state is EntryState.IN_PROGRESS
    }
    shares = _time_shares(item, entries, policy, delta if delta >= 0 else _ZERO)
    actions: list[Action] = []
    seq = 0  # the next sequence number, once one is needed

    def create(
        worker: Worker | None, state: EntryState, hours: Decimal, priced: _Priced | None = None
    ) -> BillableEntry:
        nonlocal seq
        if not seq:
            seq = _next_seq(entries, EntryKind.TIME)
        rate, amount, cost_rate, cost = priced or _priced(item, policy, worker, hours)
        made = _entry(
            item, EntryKind.TIME, seq, state, hours, rate, amount, worker, cost_rate, cost
        )
        seq += 1
        return made

    def update(
        open_entry: BillableEntry,
        worker: Worker | None,
        hours: Decimal,
        reason: str,
        done_at: datetime | None = None,
        priced: _Priced | None = None,
    ) -> UpdateEntry:
        rate, amount, cost_rate, cost = priced or _priced(item, policy, worker, hours)
        return UpdateEntry(
            open_entry.entry_key, hours, rate, amount, reason, done_at, cost_rate, cost
        )

    if not done:
        sharing = {(w.key if w else None) for w, _ in shares}
        for worker, open_hours in shares:
            open_entry = open_entries.get(worker.key if worker else None)
            if open_entry is None:
                if open_hours > 0:
                    actions.append(
                        CreateEntry(
                            create(worker, EntryState.IN_PROGRESS, open_hours),
                            None,
                            "hours tracked",
                        )
                    )
                continue
            change = update(open_entry, worker, open_hours, "hours tracked")
            if open_entry.hours != open_hours or open_entry.rate != change.rate:
                actions.append(change)
        for person, open_entry in open_entries.items():
            if person not in sharing and open_entry.hours != 0:
                actions.append(
                    UpdateEntry(
                        open_entry.entry_key,
                        Decimal(0),
                        open_entry.rate,
                        _money(Decimal(0), open_entry.rate, currency),
                        "no longer assigned",
                        cost_rate=open_entry.cost_rate,
                        cost=_money(Decimal(0), open_entry.cost_rate, currency),
                    )
                )
        return actions

    done_at = item.done_at or item.updated_at
    if delta > 0:
        for worker, hours in shares:
            open_entry = open_entries.get(worker.key if worker else None)
            if hours <= 0:
                continue
            priced = _priced(item, policy, worker, hours)
            rate = priced[0]
            # Without a rate nobody can price the line: a person must look at it.
            to_state = EntryState.READY if rate is not None else EntryState.NEEDS_REVIEW
            reason = "done" if rate is not None else "done, but no rate is configured"
            if open_entry is not None:
                actions.append(update(open_entry, worker, hours, reason, done_at, priced))
                actions.append(
                    ChangeEntryState(open_entry.entry_key, open_entry.state, to_state, reason)
                )
            else:
                actions.append(
                    CreateEntry(create(worker, to_state, hours, priced), done_at, reason)
                )
        for person, open_entry in open_entries.items():
            if not any((w.key if w else None) == person and h > 0 for w, h in shares):
                actions.extend(_zero_and_void(open_entry, "done with no new hours"))
        return actions

    for open_entry in open_entries.values():
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
                    cost_rate=entry.cost_rate,
                    cost=_money(left, entry.cost_rate, currency),
                )
            )
    if remaining > 0:
        billed = [e for e in entries if e.kind is EntryKind.TIME and e.rate is not None]
        last = billed[-1] if billed else None
        rate = last.rate if last else None
        seq = _next_seq(entries, EntryKind.ADJUSTMENT)
        adjustment = _entry(
            item,
            EntryKind.ADJUSTMENT,
            seq,
            EntryState.NEEDS_REVIEW,
            -remaining,
            rate,
            _money(-remaining, rate, currency),
        )
        if last is not None and last.person is not None:
            adjustment = replace(
                adjustment,
                entry_key=entry_key(item.key, EntryKind.ADJUSTMENT, seq, last.person),
                person=last.person,
                role=last.role,
            )
        if last is not None and last.cost_rate is not None:
            adjustment = replace(
                adjustment,
                cost_rate=last.cost_rate,
                cost=_money(-remaining, last.cost_rate, currency),
            )
        actions.append(
            CreateEntry(
                adjustment,
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
    who, cost_rate, cost = _shared_cost(item, policy, hours)
    open_entry = next((e for e in milestones if e.state is EntryState.IN_PROGRESS), None)

    def new(state: EntryState) -> BillableEntry:
        made = _entry(item, EntryKind.MILESTONE, 1, state, hours, None, amount)
        return replace(
            made,
            person=who.key if who else None,
            role=_role_key(who),
            cost_rate=cost_rate,
            cost=cost,
        )

    if not done:
        if open_entry is None:
            return [CreateEntry(new(EntryState.IN_PROGRESS), None, "milestone in progress")]
        if open_entry.hours != hours or open_entry.amount != amount or open_entry.cost != cost:
            return [
                UpdateEntry(
                    open_entry.entry_key,
                    hours,
                    None,
                    amount,
                    "milestone in progress",
                    cost_rate=cost_rate,
                    cost=cost,
                )
            ]
        return []
    done_at = item.done_at or item.updated_at
    to_state = EntryState.READY if amount is not None else EntryState.NEEDS_REVIEW
    reason = "milestone done" if amount else "fixed price item done without a milestone amount"
    if open_entry is None:
        return [CreateEntry(new(to_state), done_at, reason)]
    return [
        UpdateEntry(open_entry.entry_key, hours, None, amount, reason, done_at, cost_rate, cost),
        ChangeEntryState(open_entry.entry_key, open_entry.state, to_state, reason),
    ]


def _role_key(worker: Worker | None) -> str | None:
    return worker.role.key if worker is not None and worker.role is not None else None


def _shared_cost(
    item: BoardItem, policy: BoardPolicy, hours: Decimal
) -> tuple[Worker | None, Decimal | None, Money | None]:
    """(the one worker, cost rate, cost) of an item's raw hours for a milestone or
    non-billable entry: the hours shared as time lines would be (the "Hours by person"
    field, else equal shares, to the minute), each share × that worker's cost rate.
    Several workers: no single worker and no single cost rate, only the summed cost.
    Shares whose worker has no cost rate add nothing; no cost rate at all: None."""
    currency = policy.client.currency
    on = (item.done_at or item.updated_at).date()
    workers = _workers(item, policy)
    if len(workers) <= 1:
        worker = workers[0] if workers else None
        rate = resolve_cost_rate(policy, on, worker)
        return worker, rate, _money(hours, rate, currency)
    if item.hours_by_person:
        field: dict[str, Decimal] = {}
        for name, value in item.hours_by_person:
            key = policy.staff.worker(name).key
            field[key] = field.get(key, Decimal(0)) + value
        weights = [field.get(w.key, Decimal(0)) for w in workers]
    else:
        weights = [Decimal(1)] * len(workers)
    total: Decimal | None = None
    for worker, share in zip(workers, split_hours(hours, weights, 1), strict=True):
        rate = resolve_cost_rate(policy, on, worker)
        if rate is not None:
            total = (total or Decimal(0)) + share * rate
    return None, None, Money(total, currency).quantized() if total is not None else None


def _plan_cost(
    item: BoardItem, entries: tuple[BillableEntry, ...], policy: BoardPolicy, done: bool
) -> list[Action]:
    held = next((e for e in entries if e.kind is EntryKind.COST), None)
    hours = item.tracked_hours
    who, cost_rate, cost = _shared_cost(item, policy, hours)
    if held is None:
        if hours <= 0:
            return []
        made = _entry(item, EntryKind.COST, 1, EntryState.NON_BILLABLE, hours, None, None)
        made = replace(
            made,
            person=who.key if who else None,
            role=_role_key(who),
            cost_rate=cost_rate,
            cost=cost,
        )
        return [
            CreateEntry(made, item.done_at if done else None, "non-billable hours tracked as cost")
        ]
    if held.hours != hours or held.cost != cost:
        return [
            UpdateEntry(
                held.entry_key,
                hours,
                None,
                None,
                "non-billable hours tracked",
                cost_rate=cost_rate,
                cost=cost,
            )
        ]
    return []


def _entry(
    item: BoardItem,
    kind: EntryKind,
    seq: int,
    state: EntryState,
    hours: Decimal,
    rate: Decimal | None,
    amount: Money | None,
    worker: Worker | None = None,
    cost_rate: Decimal | None = None,
    cost: Money | None = None,
) -> BillableEntry:
    person = worker.key if worker is not None else None
    key = item.key
    return BillableEntry(
        entry_key(key, kind, seq, person),
        key,
        kind,
        seq,
        state,
        hours,
        rate,
        amount,
        item.title,
        person,
        _role_key(worker),
        cost_rate,
        cost,
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
                e.person,
                e.role,
                action.cost_rate,
                action.cost,
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
                e.person,
                e.role,
                e.cost_rate,
                e.cost,
            )
    return HeldItem(revision, digest, column, category, tuple(entries.values()))
