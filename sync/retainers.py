"""The retainer step of drafting: the shell around `mapping.retainers`.

`apply_retainer` runs inside the draft's transaction, before the ready lines are
placed (`Invoicing._draft`): it adds the period's fixed retainer line (once per client
and period: `retainer_periods` is unique on both, and its `line_entry_id` names the
line), and re-prices each new ready T&M entry of the client as the core decides:
covered hours at no charge of their own, overage at the overage rate (an entry that
straddles the limit is split in two). Each entry is placed once
(`retainer_allocations`): a line released from a rejected or voided draft keeps what
it was. Money exact to the currency's minor unit (`Money.quantized`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from mapping.domain import BillingType, EntryKind, EntryState, StateCategory, entry_key
from mapping.invoices import BillingPeriod, Cadence, billing_period
from mapping.money import Money
from mapping.retainers import (
    RetainerPeriod,
    RetainerTerms,
    RetainerUsage,
    WorkEntry,
    next_period,
    plan_retainer,
    usage,
)
from sync.ledger import schema as t
from sync.ledger.store import Ledger
from sync.settings import ClientSettings, Settings

RETAINER_SOURCE = "retainer"
RETAINER_BOARD = "retainer"


def retainer_item_key(client_key: str, period_key: str) -> str:
    """One item per client and period: the period's retainer, billed once (one
    milestone entry, like any fixed-price item)."""
    return f"{RETAINER_SOURCE}:{RETAINER_BOARD}:{client_key}:{period_key}"


def _period_of(row: Any) -> RetainerPeriod:
    return RetainerPeriod(
        str(row.period_key),
        row.counted_hours,
        row.covered_hours,
        row.rollover_in,
        row.line_entry_id is not None,
    )


def _period_row(
    conn: Connection, terms: RetainerTerms, client: str, period: BillingPeriod, now: datetime
) -> Any:
    """The client's row for the period, created from the previous period's (rollover)."""
    query = select(t.retainer_periods).where(
        t.retainer_periods.c.client == client, t.retainer_periods.c.period_key == period.key
    )
    row = conn.execute(query.with_for_update()).first()
    if row is not None:
        return row
    previous = conn.execute(
        select(t.retainer_periods)
        .where(
            t.retainer_periods.c.client == client,
            t.retainer_periods.c.period_start < period.start,
        )
        .order_by(t.retainer_periods.c.period_start.desc())
        .limit(1)
    ).first()
    start = next_period(terms, _period_of(previous) if previous is not None else None, period.key)
    conn.execute(
        insert(t.retainer_periods).values(
            client=client,
            period_key=period.key,
            period_start=period.start,
            counted_hours=start.counted_hours,
            covered_hours=start.covered_hours,
            rollover_in=start.rollover_in,
            line_entry_id=None,
            created_at=now,
            updated_at=now,
        )
    )
    return conn.execute(query).one()


def _retainer_item(
    conn: Connection, client: ClientSettings, period: BillingPeriod, now: datetime
) -> int:
    key = retainer_item_key(client.key, period.key)
    found = conn.execute(select(t.items.c.id).where(t.items.c.item_key == key)).scalar()
    if found is not None:
        return int(found)
    return int(
        conn.execute(
            insert(t.items).values(
                item_key=key,
                source=RETAINER_SOURCE,
                board=RETAINER_BOARD,
                external_id=f"{client.key}:{period.key}",
                client=client.key,
                title=f"Retainer, {period.label}",
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


def _next_seq(conn: Connection, item_id: int, kind: EntryKind) -> int:
    return int(
        conn.execute(
            select(func.coalesce(func.max(t.entries.c.seq), 0)).where(
                t.entries.c.item_id == item_id, t.entries.c.kind == kind.value
            )
        ).scalar_one()
        + 1
    )


def _insert_entry(conn: Connection, now: datetime, actor: str, reason: str, **values: Any) -> int:
    entry_id = int(
        conn.execute(
            insert(t.entries).values(
                state=EntryState.READY.value, created_at=now, updated_at=now, **values
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    )
    conn.execute(
        insert(t.entry_events).values(
            entry_id=entry_id,
            from_state=None,
            to_state=EntryState.READY.value,
            hours=values["hours"],
            amount=values.get("amount"),
            actor=actor,
            reason=reason,
            at=now,
        )
    )
    return entry_id


def _event(
    conn: Connection,
    entry_id: int,
    hours: Decimal,
    amount: Decimal | None,
    actor: str,
    why: str,
    now: datetime,
) -> None:
    conn.execute(
        insert(t.entry_events).values(
            entry_id=entry_id,
            from_state=EntryState.READY.value,
            to_state=EntryState.READY.value,
            hours=hours,
            amount=amount,
            actor=actor,
            reason=why,
            at=now,
        )
    )


def _cost(hours: Decimal, row: Any) -> Decimal | None:
    if row.cost_rate is None:
        return None
    return Money(hours * row.cost_rate, row.currency).quantized().amount


@dataclass(frozen=True, slots=True)
class RetainerStep:
    """What the retainer step did to a draft (for logs and the CLI)."""

    line_added: bool = False
    covered: int = 0
    overage: int = 0


def apply_retainer(
    conn: Connection,
    client: ClientSettings,
    period: BillingPeriod,
    now: datetime,
    actor: str,
) -> RetainerStep:
    """Bill the client's retainer for `period` on the draft being built (see module).

    Idempotent: run again in the same period, it adds no second line and re-prices no
    entry twice. Without a retainer it does nothing."""
    if client.retainer is None:
        return RetainerStep()
    terms = client.retainer.terms(client.currency)
    row = _period_row(conn, terms, client.key, period, now)
    ready = conn.execute(
        select(t.entries, t.items.c.item_key, t.items.c.title)
        .join(t.items, t.items.c.id == t.entries.c.item_id)
        .outerjoin(t.retainer_allocations, t.retainer_allocations.c.entry_id == t.entries.c.id)
        .where(
            t.entries.c.client == client.key,
            t.entries.c.state == EntryState.READY.value,
            t.entries.c.kind == EntryKind.TIME.value,
            t.entries.c.currency == client.currency,
            t.retainer_allocations.c.id.is_(None),
        )
        .order_by(t.entries.c.id)
    ).all()
    plan = plan_retainer(
        terms, _period_of(row), [WorkEntry(int(r.id), r.hours, r.rate) for r in ready]
    )
    by_id = {int(r.id): r for r in ready}
    covered = overage = 0

    def allocate(entry_id: int, covered_hours: Decimal, overage_hours: Decimal) -> None:
        conn.execute(
            insert(t.retainer_allocations).values(
                entry_id=entry_id,
                client=client.key,
                period_key=period.key,
                covered_hours=covered_hours,
                overage_hours=overage_hours,
                created_at=now,
            )
        )

    for allocation in plan.allocations:
        entry = by_id[allocation.entry_id]
        title = str(entry.description or entry.title or "")
        if allocation.covered_hours > 0:
            covered += 1
            why = f"{allocation.covered_hours} h covered by the {period.label} retainer"
            conn.execute(
                update(t.entries)
                .where(t.entries.c.id == entry.id)
                .values(
                    hours=allocation.covered_hours,
                    rate=Decimal(0),
                    amount=Money.zero(client.currency).quantized().amount,
                    cost=_cost(allocation.covered_hours, entry),
                    description=f"{title} (covered by retainer)",
                    updated_at=now,
                )
            )
            _event(conn, int(entry.id), allocation.covered_hours, Decimal(0), actor, why, now)
            allocate(int(entry.id), allocation.covered_hours, Decimal(0))
        if allocation.overage_hours == 0:
            continue
        overage += 1
        amount = allocation.overage_amount.amount if allocation.overage_amount else None
        why = f"{allocation.overage_hours} h overage beyond the {period.label} retainer"
        values: dict[str, Any] = {
            "hours": allocation.overage_hours,
            "rate": allocation.overage_rate,
            "amount": amount,
            "cost": _cost(allocation.overage_hours, entry),
            "description": f"{title} (overage beyond retainer)",
        }
        if allocation.split:
            seq = _next_seq(conn, int(entry.item_id), EntryKind.TIME)
            new_id = _insert_entry(
                conn,
                now,
                actor,
                why,
                entry_key=entry_key(str(entry.item_key), EntryKind.TIME, seq, entry.person),
                item_id=entry.item_id,
                client=entry.client,
                kind=EntryKind.TIME.value,
                seq=seq,
                currency=entry.currency,
                done_at=entry.done_at,
                person=entry.person,
                role=entry.role,
                cost_rate=entry.cost_rate,
                **values,
            )
            allocate(new_id, Decimal(0), allocation.overage_hours)
        else:
            conn.execute(
                update(t.entries).where(t.entries.c.id == entry.id).values(updated_at=now, **values)
            )
            _event(conn, int(entry.id), allocation.overage_hours, amount, actor, why, now)
            allocate(int(entry.id), Decimal(0), allocation.overage_hours)
    line_entry_id = row.line_entry_id
    if plan.retainer_line is not None:
        item_id = _retainer_item(conn, client, period, now)
        seq = _next_seq(conn, item_id, EntryKind.MILESTONE)
        line_entry_id = _insert_entry(
            conn,
            now,
            actor,
            f"retainer line for {period.label}",
            entry_key=entry_key(
                retainer_item_key(client.key, period.key), EntryKind.MILESTONE, seq
            ),
            item_id=item_id,
            client=client.key,
            kind=EntryKind.MILESTONE.value,
            seq=seq,
            hours=Decimal(0),
            rate=None,
            amount=plan.retainer_line.amount,
            currency=client.currency,
            description=_line_text(terms, plan.period, period),
            done_at=period.start,
        )
    conn.execute(
        update(t.retainer_periods)
        .where(t.retainer_periods.c.id == row.id)
        .values(
            counted_hours=plan.period.counted_hours,
            covered_hours=plan.period.covered_hours,
            line_entry_id=line_entry_id,
            updated_at=now,
        )
    )
    return RetainerStep(plan.retainer_line is not None, covered, overage)


def _line_text(terms: RetainerTerms, state: RetainerPeriod, period: BillingPeriod) -> str:
    hours = terms.included_hours.normalize()
    text = f"Retainer, {period.label}: {hours:f} h included"
    if terms.rollover and state.rollover_in:
        text += f" (+{state.rollover_in.normalize():f} h rolled over)"
    return text


def retainer_usage(
    conn: Connection, settings: Settings, client_key: str, period_key: str
) -> RetainerUsage | None:
    """Used / included for the client's period (None: no retainer). A period nothing
    was drafted in yet shows what it would start with (rollover from the last one)."""
    client = settings.client(client_key)
    if client.retainer is None:
        return None
    terms = client.retainer.terms(client.currency)
    row = conn.execute(
        select(t.retainer_periods).where(
            t.retainer_periods.c.client == client_key,
            t.retainer_periods.c.period_key == period_key,
        )
    ).first()
    if row is not None:
        return usage(terms, _period_of(row))
    last = conn.execute(
        select(t.retainer_periods)
        .where(t.retainer_periods.c.client == client_key)
        .order_by(t.retainer_periods.c.period_start.desc())
        .limit(1)
    ).first()
    start = next_period(terms, _period_of(last) if last is not None else None, period_key)
    return usage(terms, start)


def retainer_view(
    conn: Connection, settings: Settings, client_key: str, now: datetime
) -> dict[str, Any] | None:
    """The dashboard's used / included for the client's current period (JSON-ready)."""
    client = settings.client(client_key)
    if client.retainer is None:
        return None
    period = billing_period(
        Cadence(client.cadence.value), now, client.timezone, client.week_starts_on
    )
    seen = retainer_usage(conn, settings, client_key, period.key)
    assert seen is not None
    return {
        "period": period.label,
        "period_key": period.key,
        "used_hours": f"{seen.used_hours.normalize():f}",
        "available_hours": f"{seen.available_hours.normalize():f}",
        "included_hours": f"{seen.included_hours.normalize():f}",
        "rollover_hours": f"{seen.rollover_in.normalize():f}",
        "overage_hours": f"{seen.overage_hours.normalize():f}",
        "percent": str(seen.percent),
        "amount": str(seen.amount.amount),
        "value_used": str(seen.value_used.amount),
    }


def with_retainers(
    get_payload: Callable[[], dict[str, Any]],
    ledger: Ledger,
    settings: Settings,
    clock: Callable[[], datetime],
) -> Callable[[], dict[str, Any]]:
    """The dashboard's payload plus `retainer` (used / included) on each client that
    has one."""
    keys = {c.key for c in settings.clients if c.retainer is not None}

    def payload() -> dict[str, Any]:
        data = get_payload()
        if not keys:
            return data
        with ledger.engine.connect() as conn:
            for client in data.get("clients", []):
                if client.get("client") in keys:
                    client["retainer"] = retainer_view(conn, settings, client["client"], clock())
        return data

    return payload
