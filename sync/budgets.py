"""Budgets in the shell: spend read from the ledger, alerts queued to the Slack outbox
once per threshold per period, and the over-budget flags a draft carries.

Spend in a period (`per = "period"`): the client's entries on drafts / invoices of that
billing period plus its ready entries not yet on a draft (they go on the period's
draft), in billable states; `per = "total"`: every such entry ever. Hours are the
hours of time and fixed-price entries (hours covered by a retainer included), money is
every line's amount (time, milestones, the retainer line). A board's budget counts the
entries of that board's items only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, case, func, insert, literal, or_, select

from mapping.budgets import (
    Budget,
    BudgetAlert,
    Spend,
    SpendLine,
    alerts_to_send,
    over_budget_lines,
    status,
)
from mapping.domain import EntryKind, EntryState
from mapping.invoices import BillingPeriod
from mapping.money import Money
from sync.ledger import schema as t
from sync.ledger.ops import enqueue, ledger_id
from sync.ledger.outbox import Operation
from sync.ledger.schema import ScaledDecimal
from sync.settings import ClientSettings, Settings

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


def _spend_rows(
    conn: Connection, budget: Budget, client: str, period_key: str, exclude_invoice: int | None
) -> list[Any]:
    e = t.entries
    query = _scope(
        select(e.c.id, e.c.kind, e.c.hours, e.c.amount, e.c.invoice_id), budget, client, period_key
    ).order_by(e.c.id)
    if exclude_invoice is not None:
        query = query.where(or_(e.c.invoice_id.is_(None), e.c.invoice_id != exclude_invoice))
    return list(conn.execute(query).all())


def _spend_of(rows: Iterable[Any], currency: str) -> Spend:
    total = Spend.zero(currency)
    for row in rows:
        total = total + Spend(_hours(row), Money(row.amount or Decimal(0), currency))
    return total


def _hours(row: Any) -> Decimal:
    return Decimal(row.hours or 0) if row.kind in _HOUR_KINDS else Decimal(0)


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


def queue_budget_alerts(
    conn: Connection,
    settings: Settings,
    client: ClientSettings,
    period: BillingPeriod,
    now: datetime,
) -> list[BudgetAlert]:
    """Record and queue (Slack outbox) every threshold newly reached in the period.

    Idempotent: `budget_alerts.dedupe_key` (scope, period, threshold) is unique and the
    outbox key is derived from it, so a threshold is alerted once per period whatever
    runs the check and how often. Without `slack.channel` the alert is only recorded
    (shown by the dashboard and review API as the budget's state)."""
    queued: list[BudgetAlert] = []
    for budget in settings.budgets(client.key):
        key = budget.period_key(period.key)
        sent = conn.execute(
            select(t.budget_alerts.c.threshold).where(
                t.budget_alerts.c.scope == budget.scope, t.budget_alerts.c.period_key == key
            )
        ).scalars()
        alerts = alerts_to_send(budget, period.key, spend(conn, budget, client.key, key), sent)
        for alert in alerts:
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
            if settings.slack.channel:
                enqueue(
                    conn,
                    Operation.SLACK_BUDGET_ALERT.value,
                    f"kv-{ledger_id(conn)}-{alert.dedupe_key}",
                    now,
                    payload={
                        "text": alert.text,
                        "scope": alert.scope,
                        "period": alert.period_key,
                        "threshold": alert.threshold,
                        "over": alert.over,
                        "client": client.key,
                    },
                )
            queued.append(alert)
    return queued


@dataclass(frozen=True, slots=True)
class DraftBudget:
    """The over-budget state of one draft: a sentence per budget it is over, and the
    lines that take the spend over the cap (entry id → the budgets they are over)."""

    flags: tuple[str, ...] = ()
    lines: dict[int, tuple[str, ...]] = field(default_factory=dict)
    budgets: tuple[dict[str, Any], ...] = ()

    @property
    def over(self) -> bool:
        return bool(self.flags)


def draft_budget(conn: Connection, settings: Settings, invoice: Any) -> DraftBudget:
    """Over-budget flags for a draft (finance sees them before approving): computed
    from the ledger now, so a line added or excluded changes them at once."""
    try:
        budgets = settings.budgets(str(invoice.client))
    except KeyError:
        return DraftBudget()
    flags: list[str] = []
    per_line: dict[int, list[str]] = {}
    shown: list[dict[str, Any]] = []
    for budget in budgets:
        key = budget.period_key(str(invoice.period_key))
        before = _spend_of(
            _spend_rows(conn, budget, str(invoice.client), key, int(invoice.id)), budget.currency
        )
        mine = [
            r
            for r in _spend_rows(conn, budget, str(invoice.client), key, None)
            if r.invoice_id == invoice.id
        ]
        lines = [
            SpendLine(int(r.id), _hours(r), Money(r.amount or Decimal(0), budget.currency))
            for r in mine
        ]
        total = before + _spend_of(mine, budget.currency)
        now = status(budget, total)
        shown.append(
            {
                "scope": budget.scope,
                "period": key,
                "hours": None if budget.hours is None else str(budget.hours),
                "amount": None
                if budget.amount is None
                else str(Money(budget.amount, budget.currency).quantized().amount),
                "spent_hours": str(total.hours),
                "spent_amount": str(total.amount.quantized().amount),
                "percent": str(now.percent),
                "over": now.over,
                "text": now.describe(),
            }
        )
        if now.over:
            flags.append(f"over budget: {now.describe()}")
            for entry_id in over_budget_lines(budget, before, lines):
                per_line.setdefault(entry_id, []).append(f"over budget ({budget.scope})")
    return DraftBudget(tuple(flags), {k: tuple(v) for k, v in per_line.items()}, tuple(shown))
