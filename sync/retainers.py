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

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from mapping.invoices import BillingPeriod, Cadence, billing_period
from mapping.money import Money
from mapping.retainers import (
    PlacedEntry,
    RetainerPeriod,
    RetainerTerms,
    RetainerUsage,
    WorkEntry,
    next_period,
    plan_retainer,
    release_lowered,
    usage,
)
from sync.ledger import retainers as store
from sync.ledger.retainers import (
    RETAINER_BOARD,
    RETAINER_SOURCE,
    Pricing,
    RetainerEntryRecord,
    RetainerPeriodRecord,
    retainer_item_key,
)
from sync.settings import ClientSettings, Settings

__all__ = [
    "RETAINER_BOARD",
    "RETAINER_SOURCE",
    "RetainerStep",
    "apply_retainer",
    "retainer_item_key",
    "retainer_usage",
    "retainer_view",
]


def _period_row(
    conn: Connection, terms: RetainerTerms, client: str, period: BillingPeriod, now: datetime
) -> RetainerPeriodRecord:
    """The client's row for the period (held for the draft's transaction), created from
    the previous period's (rollover)."""
    row = store.lock_period(conn, client, period.key)
    if row is not None:
        return row
    previous = store.period_before(conn, client, period.start)
    start = next_period(terms, previous.state if previous is not None else None, period.key)
    return store.insert_period(conn, client, period.start, start, now)


def _cost(hours: Decimal, entry: RetainerEntryRecord) -> Decimal | None:
    if entry.cost_rate is None:
        return None
    return Money(hours * entry.cost_rate, entry.currency).quantized().amount


def _release_lowered(conn: Connection, client: str, now: datetime) -> int:
    """Hours lowered on entries the retainer already placed (the board's hours fell
    while the line was ready or on a draft): the core gives them back, overage first;
    their periods' counted / covered hours fall to match. Returns how many entries."""
    by_period: dict[str, list[PlacedEntry]] = {}
    for p in store.lowered_placements(conn, client):
        entry = PlacedEntry(p.entry_id, p.covered_hours, p.overage_hours, p.hours_now)
        by_period.setdefault(p.period_key, []).append(entry)
    released = 0
    for period_key, placed in by_period.items():
        row = store.lock_period(conn, client, period_key)
        if row is None:  # an allocation always has its period; nothing to correct
            continue
        state, releases = release_lowered(row.state, placed)
        for release in releases:
            store.update_allocation(
                conn, release.entry_id, release.covered_hours, release.overage_hours
            )
        store.save_period(conn, row.id, state, row.line_entry_id, now)
        released += len(releases)
    return released


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
    _release_lowered(conn, client.key, now)
    row = _period_row(conn, terms, client.key, period, now)
    ready = store.unplaced_ready_time(conn, client.key, client.currency)
    plan = plan_retainer(terms, row.state, [WorkEntry(r.id, r.hours, r.rate) for r in ready])
    by_id = {r.id: r for r in ready}
    covered = overage = 0
    for allocation in plan.allocations:
        entry = by_id[allocation.entry_id]
        title = entry.description or entry.title
        if allocation.covered_hours > 0:
            covered += 1
            why = f"{allocation.covered_hours} h covered by the {period.label} retainer"
            pricing = Pricing(
                hours=allocation.covered_hours,
                rate=Decimal(0),
                amount=Money.zero(client.currency).quantized().amount,
                cost=_cost(allocation.covered_hours, entry),
                description=f"{title} (covered by retainer)",
            )
            store.reprice_entry(
                conn,
                entry,
                period.key,
                pricing,
                allocation.covered_hours,
                Decimal(0),
                actor,
                why,
                now,
            )
        if allocation.overage_hours == 0:
            continue
        overage += 1
        why = f"{allocation.overage_hours} h overage beyond the {period.label} retainer"
        pricing = Pricing(
            hours=allocation.overage_hours,
            rate=allocation.overage_rate,
            amount=allocation.overage_amount.amount if allocation.overage_amount else None,
            cost=_cost(allocation.overage_hours, entry),
            description=f"{title} (overage beyond retainer)",
        )
        if allocation.split:
            store.split_overage(conn, entry, period.key, pricing, actor, why, now)
        else:
            store.reprice_entry(
                conn,
                entry,
                period.key,
                pricing,
                Decimal(0),
                allocation.overage_hours,
                actor,
                why,
                now,
            )
    line_entry_id = row.line_entry_id
    if plan.retainer_line is not None:
        line_entry_id = store.insert_retainer_line(
            conn,
            client.key,
            period.key,
            period.label,
            period.start,
            plan.retainer_line.amount,
            client.currency,
            _line_text(terms, plan.period, period),
            actor,
            now,
        )
    store.save_period(conn, row.id, plan.period, line_entry_id, now)
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
    row = store.find_period(conn, client_key, period_key)
    if row is not None:
        return usage(terms, row.state)
    last = store.period_before(conn, client_key)
    start = next_period(terms, last.state if last is not None else None, period_key)
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
