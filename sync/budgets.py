"""Budgets in the shell: spend read from the ledger (`sync.ledger.budgets`), alerts
queued to the Slack outbox once per threshold per period, and the over-budget flags a
draft carries.

Spend in a period (`per = "period"`): the client's entries on drafts / invoices of that
billing period plus its ready entries not yet on a draft (they go on the period's
draft), in billable states; `per = "total"`: every such entry ever. Hours are the
hours of time and fixed-price entries (hours covered by a retainer included), money is
every line's amount (time, milestones, the retainer line). A board's budget counts the
entries of that board's items only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from mapping.budgets import (
    BudgetAlert,
    alerts_to_send,
    over_budget_lines,
    status,
)
from mapping.invoices import BillingPeriod, Cadence, billing_period
from mapping.money import Money
from sync.ledger import budgets as store
from sync.ledger.budgets import SPENT_STATES, spend
from sync.ledger.ops import enqueue, ledger_id
from sync.ledger.outbox import Operation
from sync.settings import ClientSettings, Settings

__all__ = [
    "SPENT_STATES",
    "DraftBudget",
    "budget_view",
    "draft_budget",
    "queue_budget_alerts",
    "spend",
]


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
        sent = store.alerted_thresholds(conn, budget.scope, key)
        alerts = alerts_to_send(budget, period.key, spend(conn, budget, client.key, key), sent)
        for alert in alerts:
            store.record_alert(conn, alert, now)
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
        before = store.spend_of(
            store.spend_records(conn, budget, str(invoice.client), key, int(invoice.id)),
            budget.currency,
        )
        mine = [
            r
            for r in store.spend_records(conn, budget, str(invoice.client), key, None)
            if r.invoice_id == int(invoice.id)
        ]
        lines = [r.line(budget.currency) for r in mine]
        total = before + store.spend_of(mine, budget.currency)
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


def budget_view(
    conn: Connection, settings: Settings, client_key: str, now: datetime
) -> list[dict[str, Any]]:
    """Each budget of the client (its own and its boards') in the current billing
    period (or over its whole life, `per = "total"`), JSON-ready for the dashboard and
    `kanvoice status`: spent / cap in hours and money, percent of the cap (the larger
    measure, floored to 0.1 %), thresholds reached, over or not. Read-only: it alerts
    nothing (`queue_budget_alerts` does, when a draft is made)."""
    budgets = settings.budgets(client_key)
    if not budgets:
        return []
    client = settings.client(client_key)
    period = billing_period(
        Cadence(client.cadence.value), now, client.timezone, client.week_starts_on
    )
    shown: list[dict[str, Any]] = []
    for budget in budgets:
        key = budget.period_key(period.key)
        seen = status(budget, spend(conn, budget, client_key, key))
        shown.append(
            {
                "scope": budget.scope,
                "per": budget.per,
                "period": period.label if budget.per == "period" else "total",
                "period_key": key,
                "currency": budget.currency,
                "hours": None if budget.hours is None else f"{budget.hours.normalize():f}",
                "amount": None
                if budget.amount is None
                else str(Money(budget.amount, budget.currency).quantized().amount),
                "spent_hours": f"{seen.spend.hours.normalize():f}",
                "spent_amount": str(seen.spend.amount.quantized().amount),
                "hours_percent": None if seen.hours_percent is None else str(seen.hours_percent),
                "amount_percent": None if seen.amount_percent is None else str(seen.amount_percent),
                "percent": str(seen.percent),
                "thresholds": list(budget.thresholds),
                "reached": list(seen.reached()),
                "over": seen.over,
                "text": seen.describe(),
            }
        )
    return shown
