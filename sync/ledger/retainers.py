"""Ledger reads and writes for retainers: the per-period state (`retainer_periods`),
the allocation of each T&M entry (`retainer_allocations`), the re-priced entries and
the period's fixed retainer line.

SQL lives here; the decisions are pure (`mapping.retainers`) and the shell
(`sync.retainers`) only loads, asks the core and saves. Every write runs on the
caller's connection, inside the draft's transaction: a retainer step is all or
nothing with the draft it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Self

from sqlalchemy import Connection, RowMapping, func, insert, or_, select, update

from mapping.domain import BillingType, EntryKind, EntryState, StateCategory, entry_key
from mapping.retainers import RetainerPeriod
from sync.ledger import schema as t
from sync.ledger.records import utc

RETAINER_SOURCE = "retainer"
RETAINER_BOARD = "retainer"


def retainer_item_key(client_key: str, period_key: str) -> str:
    """One item per client and period: the period's retainer, billed once (one
    milestone entry, like any fixed-price item)."""
    return f"{RETAINER_SOURCE}:{RETAINER_BOARD}:{client_key}:{period_key}"


@dataclass(frozen=True, slots=True)
class RetainerPeriodRecord:
    """One `retainer_periods` row: the client's retainer state in one billing period."""

    id: int
    client: str
    period_key: str
    period_start: datetime | None
    counted_hours: Decimal
    covered_hours: Decimal
    rollover_in: Decimal
    line_entry_id: int | None

    @classmethod
    def from_row(cls, row: RowMapping) -> Self:
        line = row["line_entry_id"]
        return cls(
            id=int(row["id"]),
            client=str(row["client"]),
            period_key=str(row["period_key"]),
            period_start=utc(row["period_start"]),
            counted_hours=Decimal(row["counted_hours"]),
            covered_hours=Decimal(row["covered_hours"]),
            rollover_in=Decimal(row["rollover_in"]),
            line_entry_id=None if line is None else int(line),
        )

    @property
    def state(self) -> RetainerPeriod:
        """The period as the pure core sees it."""
        return RetainerPeriod(
            self.period_key,
            self.counted_hours,
            self.covered_hours,
            self.rollover_in,
            self.line_entry_id is not None,
        )


@dataclass(frozen=True, slots=True)
class RetainerEntryRecord:
    """A ready T&M entry of the client the retainer has not placed yet (with its item's
    key and title, for the split entry's key and the line text)."""

    id: int
    item_id: int
    item_key: str
    title: str
    description: str
    client: str
    hours: Decimal
    rate: Decimal | None
    cost_rate: Decimal | None
    currency: str
    done_at: datetime | None
    person: str | None
    role: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> Self:
        return cls(
            id=int(row["id"]),
            item_id=int(row["item_id"]),
            item_key=str(row["item_key"]),
            title=str(row["title"] or ""),
            description=str(row["description"] or ""),
            client=str(row["client"]),
            hours=Decimal(row["hours"]),
            rate=None if row["rate"] is None else Decimal(row["rate"]),
            cost_rate=None if row["cost_rate"] is None else Decimal(row["cost_rate"]),
            currency=str(row["currency"]),
            done_at=utc(row["done_at"]),
            person=None if row["person"] is None else str(row["person"]),
            role=None if row["role"] is None else str(row["role"]),
        )


def _period_query(client: str, period_key: str) -> Any:
    return select(t.retainer_periods).where(
        t.retainer_periods.c.client == client, t.retainer_periods.c.period_key == period_key
    )


def find_period(conn: Connection, client: str, period_key: str) -> RetainerPeriodRecord | None:
    """The client's state in the period, if anything was drafted in it."""
    row = conn.execute(_period_query(client, period_key)).mappings().first()
    return None if row is None else RetainerPeriodRecord.from_row(row)


def lock_period(conn: Connection, client: str, period_key: str) -> RetainerPeriodRecord | None:
    """`find_period`, holding the row (``FOR UPDATE`` on PostgreSQL) until the draft's
    transaction ends: two drafts of one client never place the same hours twice."""
    query = _period_query(client, period_key).with_for_update()
    row = conn.execute(query).mappings().first()
    return None if row is None else RetainerPeriodRecord.from_row(row)


def period_before(
    conn: Connection, client: str, start: datetime | None = None
) -> RetainerPeriodRecord | None:
    """The client's latest period starting before `start` (None: the latest of all),
    whose unused hours may roll over."""
    query = select(t.retainer_periods).where(t.retainer_periods.c.client == client)
    if start is not None:
        query = query.where(t.retainer_periods.c.period_start < start)
    query = query.order_by(t.retainer_periods.c.period_start.desc()).limit(1)
    row = conn.execute(query).mappings().first()
    return None if row is None else RetainerPeriodRecord.from_row(row)


def insert_period(
    conn: Connection,
    client: str,
    period_start: datetime,
    start: RetainerPeriod,
    now: datetime,
) -> RetainerPeriodRecord:
    """Open the client's period with the state the core computed (`next_period`)."""
    conn.execute(
        insert(t.retainer_periods).values(
            client=client,
            period_key=start.period_key,
            period_start=period_start,
            counted_hours=start.counted_hours,
            covered_hours=start.covered_hours,
            rollover_in=start.rollover_in,
            line_entry_id=None,
            created_at=now,
            updated_at=now,
        )
    )
    return RetainerPeriodRecord.from_row(
        conn.execute(_period_query(client, start.period_key)).mappings().one()
    )


def save_period(
    conn: Connection,
    period_id: int,
    state: RetainerPeriod,
    line_entry_id: int | None,
    now: datetime,
) -> None:
    """Record the period's counted / covered hours and its retainer line after a plan."""
    conn.execute(
        update(t.retainer_periods)
        .where(t.retainer_periods.c.id == period_id)
        .values(
            counted_hours=state.counted_hours,
            covered_hours=state.covered_hours,
            line_entry_id=line_entry_id,
            updated_at=now,
        )
    )


def unplaced_ready_time(conn: Connection, client: str, currency: str) -> list[RetainerEntryRecord]:
    """The client's ready T&M entries in `currency` without an allocation, oldest
    first: what the retainer places on this draft."""
    e = t.entries
    rows = conn.execute(
        select(
            e.c.id,
            e.c.item_id,
            t.items.c.item_key,
            t.items.c.title,
            e.c.description,
            e.c.client,
            e.c.hours,
            e.c.rate,
            e.c.cost_rate,
            e.c.currency,
            e.c.done_at,
            e.c.person,
            e.c.role,
        )
        .join(t.items, t.items.c.id == e.c.item_id)
        .outerjoin(t.retainer_allocations, t.retainer_allocations.c.entry_id == e.c.id)
        .where(
            e.c.client == client,
            e.c.state == EntryState.READY.value,
            e.c.kind == EntryKind.TIME.value,
            e.c.currency == currency,
            t.retainer_allocations.c.id.is_(None),
        )
        .order_by(e.c.id)
    ).mappings()
    return [RetainerEntryRecord.from_row(row) for row in rows]


@dataclass(frozen=True, slots=True)
class Pricing:
    """What an entry is billed as under the retainer (money already exact to the
    currency's minor unit; `amount` None: unpriced, the line waits for a person)."""

    hours: Decimal
    rate: Decimal | None
    amount: Decimal | None
    cost: Decimal | None
    description: str


def _allocate(
    conn: Connection,
    entry_id: int,
    client: str,
    period_key: str,
    covered_hours: Decimal,
    overage_hours: Decimal,
    now: datetime,
) -> None:
    """Each entry is placed once: `retainer_allocations.entry_id` is unique."""
    conn.execute(
        insert(t.retainer_allocations).values(
            entry_id=entry_id,
            client=client,
            period_key=period_key,
            covered_hours=covered_hours,
            overage_hours=overage_hours,
            created_at=now,
        )
    )


def _event(
    conn: Connection,
    entry_id: int,
    from_state: str | None,
    hours: Decimal,
    amount: Decimal | None,
    actor: str,
    why: str,
    now: datetime,
) -> None:
    conn.execute(
        insert(t.entry_events).values(
            entry_id=entry_id,
            from_state=from_state,
            to_state=EntryState.READY.value,
            hours=hours,
            amount=amount,
            actor=actor,
            reason=why,
            at=now,
        )
    )


def reprice_entry(
    conn: Connection,
    entry: RetainerEntryRecord,
    period_key: str,
    pricing: Pricing,
    covered_hours: Decimal,
    overage_hours: Decimal,
    actor: str,
    why: str,
    now: datetime,
) -> None:
    """Bill `entry` itself as `pricing` says (covered, or wholly overage), with an
    audit event and its allocation."""
    conn.execute(
        update(t.entries)
        .where(t.entries.c.id == entry.id)
        .values(
            hours=pricing.hours,
            rate=pricing.rate,
            amount=pricing.amount,
            cost=pricing.cost,
            description=pricing.description,
            updated_at=now,
        )
    )
    _event(conn, entry.id, EntryState.READY.value, pricing.hours, pricing.amount, actor, why, now)
    _allocate(conn, entry.id, entry.client, period_key, covered_hours, overage_hours, now)


def _next_seq(conn: Connection, item_id: int, kind: EntryKind) -> int:
    return int(
        conn.execute(
            select(func.coalesce(func.max(t.entries.c.seq), 0)).where(
                t.entries.c.item_id == item_id, t.entries.c.kind == kind.value
            )
        ).scalar_one()
        + 1
    )


def _insert_ready(conn: Connection, now: datetime, actor: str, why: str, **values: Any) -> int:
    entry_id = int(
        conn.execute(
            insert(t.entries).values(
                state=EntryState.READY.value, created_at=now, updated_at=now, **values
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    )
    _event(conn, entry_id, None, values["hours"], values.get("amount"), actor, why, now)
    return entry_id


def split_overage(
    conn: Connection,
    entry: RetainerEntryRecord,
    period_key: str,
    pricing: Pricing,
    actor: str,
    why: str,
    now: datetime,
) -> int:
    """The overage part of an entry that straddles the retainer's limit: a new ready
    T&M entry of the same item (next sequence number, so its own entry key and
    idempotency keys), allocated as overage. Returns its id."""
    seq = _next_seq(conn, entry.item_id, EntryKind.TIME)
    new_id = _insert_ready(
        conn,
        now,
        actor,
        why,
        entry_key=entry_key(entry.item_key, EntryKind.TIME, seq, entry.person),
        item_id=entry.item_id,
        client=entry.client,
        kind=EntryKind.TIME.value,
        seq=seq,
        currency=entry.currency,
        done_at=entry.done_at,
        person=entry.person,
        role=entry.role,
        cost_rate=entry.cost_rate,
        hours=pricing.hours,
        rate=pricing.rate,
        amount=pricing.amount,
        cost=pricing.cost,
        description=pricing.description,
    )
    _allocate(conn, new_id, entry.client, period_key, Decimal(0), pricing.hours, now)
    return new_id


def _retainer_item(
    conn: Connection, client: str, period_key: str, title: str, now: datetime
) -> int:
    key = retainer_item_key(client, period_key)
    found = conn.execute(select(t.items.c.id).where(t.items.c.item_key == key)).scalar()
    if found is not None:
        return int(found)
    return int(
        conn.execute(
            insert(t.items).values(
                item_key=key,
                source=RETAINER_SOURCE,
                board=RETAINER_BOARD,
                external_id=f"{client}:{period_key}",
                client=client,
                title=title,
                url="",
                column_name="Retainer",
                state_category=StateCategory.DONE.value,
                is_done=True,
                hours=Decimal(0),
                billing_type=BillingType.FIXED_PRICE.value,
                labels=[],
                assignees=[],
                revision=0,
                fingerprint="retainer",
                updated_at=now,
                first_seen_at=now,
                last_seen_at=now,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    )


def insert_retainer_line(
    conn: Connection,
    client: str,
    period_key: str,
    period_label: str,
    period_start: datetime,
    amount: Decimal,
    currency: str,
    description: str,
    actor: str,
    now: datetime,
) -> int:
    """The period's fixed retainer line: a ready milestone entry of the period's
    retainer item (created once per client and period). Returns the entry id."""
    item_id = _retainer_item(conn, client, period_key, f"Retainer, {period_label}", now)
    seq = _next_seq(conn, item_id, EntryKind.MILESTONE)
    return _insert_ready(
        conn,
        now,
        actor,
        f"retainer line for {period_label}",
        entry_key=entry_key(retainer_item_key(client, period_key), EntryKind.MILESTONE, seq),
        item_id=item_id,
        client=client,
        kind=EntryKind.MILESTONE.value,
        seq=seq,
        hours=Decimal(0),
        rate=None,
        amount=amount,
        currency=currency,
        description=description,
        done_at=period_start,
    )


@dataclass(frozen=True, slots=True)
class PlacementRecord:
    """An entry's `retainer_allocations` row with the hours the entry has now."""

    entry_id: int
    period_key: str
    covered_hours: Decimal
    overage_hours: Decimal
    hours_now: Decimal


def lowered_placements(conn: Connection, client: str) -> list[PlacementRecord]:
    """The client's placed entries whose hours fell below their allocation since: ready
    or drafted entries (the billing core lowers those in place) and voided ones still
    holding hours, oldest first. Invoiced entries are never lowered (an adjustment for
    review is made instead), so they are not read."""
    e, a = t.entries, t.retainer_allocations
    editable = (EntryState.READY.value, EntryState.DRAFTED.value)
    holding = or_(a.c.covered_hours > 0, a.c.overage_hours > 0)
    rows = conn.execute(
        select(a.c.entry_id, a.c.period_key, a.c.covered_hours, a.c.overage_hours, e.c.hours)
        .join(e, e.c.id == a.c.entry_id)
        .where(
            a.c.client == client,
            holding,
            or_(e.c.state.in_(editable), e.c.state == EntryState.VOIDED.value),
        )
        .order_by(a.c.entry_id)
    ).all()
    found = [
        PlacementRecord(
            int(row.entry_id),
            str(row.period_key),
            Decimal(row.covered_hours),
            Decimal(row.overage_hours),
            Decimal(row.hours),
        )
        for row in rows
    ]
    return [p for p in found if p.hours_now < p.covered_hours + p.overage_hours]


def update_allocation(
    conn: Connection, entry_id: int, covered_hours: Decimal, overage_hours: Decimal
) -> None:
    """What a placed entry still covers / runs over after its hours fell."""
    conn.execute(
        update(t.retainer_allocations)
        .where(t.retainer_allocations.c.entry_id == entry_id)
        .values(covered_hours=covered_hours, overage_hours=overage_hours)
    )
