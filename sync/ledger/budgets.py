"""Ledger reads and writes for budgets: what a budget's scope has spent, the thresholds
already alerted, and the record of a new alert.

SQL lives here; the decisions are pure (`mapping.budgets`). Spend in a period
(`per = "period"`): the client's entries on drafts / invoices of that billing period
plus its ready entries not yet on a draft (they go on the period's draft), in billable
states; `per = "total"`: every such entry ever. Hours are the hours of time and
fixed-price entries (hours covered by a retainer included), money is every line's
amount (time, milestones, the retainer line). A board's budget counts the entries of
that board's items only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, case, func, insert, literal, or_, select

from mapping.budgets import Budget, BudgetAlert, Spend, SpendLine
from mapping.domain import EntryKind, EntryState
from mapping.money import Money
from sync.ledger import schema as t
from sync.ledger.schema import ScaledDecimal

# Entries whose hours and money count against a budget.
SPENT_STATES = (
    EntryState.READY.value,
    EntryState.DRAFTED.value,
    EntryState.APPROVED.value,
    EntryState.INVOICED.value,
    EntryState.PAID.value,
)
_HOUR_KINDS = (EntryKind.TIME.value, EntryKind.MILESTONE.value)


def _scope(query: Any, budget: Budget, client: str, period_key: str) -> Any:
    """`query` (over entries ⋈ items ⟕ invoices) limited to what counts against the budget."""
    e, i, inv = t.entries, t.items, t.invoices
    query = query.select_from(
        e.join(i, i.c.id == e.c.item_id).outerjoin(inv, inv.c.id == e.c.invoice_id)
    ).where(
        e.c.client == client,
        e.c.state.in_(SPENT_STATES),
        e.c.currency == budget.currency,
    )
    if budget.scope.startswith("board:"):
        query = query.where(i.c.board == budget.scope.removeprefix("board:"))
    if budget.per == "period":
        query = query.where(
            or_(
                inv.c.period_key == period_key,
                and_(e.c.invoice_id.is_(None), e.c.state == EntryState.READY.value),
            )
        )
    return query


@dataclass(frozen=True, slots=True)
class SpendRecord:
    """One entry counting against a budget: its id, the draft / invoice it is on (None:
    ready, not drafted yet), and what it spends (hours only for time and fixed-price
    entries; money exact as the ledger holds it)."""

    entry_id: int
    invoice_id: int | None
    hours: Decimal
    amount: Decimal

    def line(self, currency: str) -> SpendLine:
        return SpendLine(self.entry_id, self.hours, Money(self.amount, currency))


def spend_records(
    conn: Connection, budget: Budget, client: str, period_key: str, exclude_invoice: int | None
) -> list[SpendRecord]:
    """The entries counting against the budget in the period, in entry order; with
    `exclude_invoice`, without those on that draft (what was spent before it)."""
    e = t.entries
    query = _scope(
        select(e.c.id, e.c.kind, e.c.hours, e.c.amount, e.c.invoice_id), budget, client, period_key
    ).order_by(e.c.id)
    if exclude_invoice is not None:
        query = query.where(or_(e.c.invoice_id.is_(None), e.c.invoice_id != exclude_invoice))
    return [
        SpendRecord(
            int(row.id),
            None if row.invoice_id is None else int(row.invoice_id),
            Decimal(row.hours or 0) if row.kind in _HOUR_KINDS else Decimal(0),
            Decimal(row.amount or 0),
        )
        for row in conn.execute(query).all()
    ]


def spend_of(records: Iterable[SpendRecord], currency: str) -> Spend:
    """The sum of `records` as a `Spend` in `currency`."""
    total = Spend.zero(currency)
    for record in records:
        total = total + Spend(record.hours, Money(record.amount, currency))
    return total


def spend(conn: Connection, budget: Budget, client: str, period_key: str) -> Spend:
    """What the budget's scope has spent in the period (see module): one aggregate
    query (sums of the ledger's exact scaled integers)."""
    e = t.entries
    hours = case((e.c.kind.in_(_HOUR_KINDS), e.c.hours), else_=literal(0, ScaledDecimal()))
    row = conn.execute(
        _scope(
            select(
                func.coalesce(func.sum(hours), literal(0, ScaledDecimal())),
                func.coalesce(func.sum(e.c.amount), literal(0, ScaledDecimal())),
            ),
            budget,
            client,
            period_key,
        )
    ).one()
    return Spend(Decimal(row[0] or 0), Money(Decimal(row[1] or 0), budget.currency))


def alerted_thresholds(conn: Connection, scope: str, period_key: str) -> tuple[int, ...]:
    """The thresholds (percent) already alerted for the scope in the period, ascending."""
    return tuple(
        sorted(
            int(p)
            for p in conn.execute(
                select(t.budget_alerts.c.threshold).where(
                    t.budget_alerts.c.scope == scope, t.budget_alerts.c.period_key == period_key
                )
            ).scalars()
        )
    )


def record_alert(conn: Connection, alert: BudgetAlert, now: datetime) -> None:
    """Record an alert under its unique dedupe key (scope, period, threshold): a second
    record of the same alert fails the transaction rather than alerting twice."""
    conn.execute(
        insert(t.budget_alerts).values(
            dedupe_key=alert.dedupe_key,
            scope=alert.scope,
            period_key=alert.period_key,
            threshold=alert.threshold,
            text=alert.text,
            created_at=now,
        )
    )
