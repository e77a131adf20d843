"""Ledger reads and writes for the finance views: aging of ready work, drafts waiting
for approval, due dates, overdue invoices and reminders.

SQL lives here; the decisions are pure (`mapping.aging`, `mapping.digest`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, case, func, or_, select, update

from mapping.aging import (
    BUCKETS,
    OPEN_INVOICE_STATES,
    BucketSum,
    ReadyWork,
    bucket_cutoffs,
    days_overdue,
    is_overdue,
)
from mapping.domain import EntryState
from mapping.money import Money
from sync.ledger import schema as t
from sync.ledger.ops import audit
from sync.ledger.records import InvoiceRecord


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _stripe_time(value: Any) -> datetime | None:
    """A Stripe timestamp (seconds since the epoch) as an aware datetime."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def record_due_date(conn: Connection, invoice_id: int, obj: dict[str, Any]) -> None:
    """Keep Stripe's ``due_date`` of the invoice (on finalize and on every webhook that
    carries one); an object without it changes nothing."""
    due = _stripe_time(obj.get("due_date"))
    if due is None:
        return
    conn.execute(update(t.invoices).where(t.invoices.c.id == invoice_id).values(due_date=due))


def mark_overdue(conn: Connection, invoice: InvoiceRecord, now: datetime) -> str:
    """Stripe's ``invoice.overdue``: flag an open invoice overdue (once; audited). A
    paid, voided or deleted invoice is not overdue any more: "stale"."""
    if invoice.state not in OPEN_INVOICE_STATES:
        return "stale"
    if invoice.overdue_at is not None:
        return "applied"
    conn.execute(update(t.invoices).where(t.invoices.c.id == invoice.id).values(overdue_at=now))
    audit(conn, now, "stripe", "overdue", f"invoice:{invoice.id}", reason="stripe invoice.overdue")
    return "applied"


def _done_time() -> Any:
    """When an entry counts as Done: its own Done time, else its item's, else when it
    was recorded."""
    return func.coalesce(t.entries.c.done_at, t.items.c.done_at, t.entries.c.created_at)


def ready_work(conn: Connection, zone: str = "UTC") -> list[ReadyWork]:
    """Every ready entry's amount and Done day (in the finance time zone), one by one:
    the reference `ready_bucket_sums` is checked against (tests)."""
    tz = ZoneInfo(zone)
    rows = conn.execute(
        select(
            t.entries.c.client,
            t.entries.c.amount,
            t.entries.c.currency,
            _done_time().label("done"),
        )
        .join(t.items, t.items.c.id == t.entries.c.item_id)
        .where(t.entries.c.state == EntryState.READY.value)
    ).all()
    out = []
    for row in rows:
        when = _aware(row.done)
        day: date | None = when.astimezone(tz).date() if when is not None else None
        out.append(ReadyWork(row.client, Money(row.amount or Decimal(0), row.currency), day))
    return out


def ready_bucket_sums(conn: Connection, today: date, zone: str = "UTC") -> list[BucketSum]:
    """Ready work summed per client, currency and age bucket by the database (one
    aggregate query, however many entries): the bucket edges are midnights of the
    finance time zone `zone` (`mapping.aging.bucket_cutoffs`), in UTC as stored."""
    tz = ZoneInfo(zone)
    edges = [
        datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC) for day in bucket_cutoffs(today)
    ]
    ready = (
        select(
            t.entries.c.client,
            t.entries.c.currency,
            t.entries.c.amount,
            _done_time().label("done"),
        )
        .join(t.items, t.items.c.id == t.entries.c.item_id)
        .where(t.entries.c.state == EntryState.READY.value)
        .subquery()
    )
    done = ready.c.done
    bucket = case(
        (done >= edges[0], 0), (done >= edges[1], 1), (done >= edges[2], 2), else_=3
    ).label("bucket")
    rows = conn.execute(
        select(
            ready.c.client,
            ready.c.currency,
            bucket,
            func.coalesce(func.sum(ready.c.amount), 0).label("amount"),
            func.count().label("entries"),
            func.min(done).label("oldest"),
        ).group_by(ready.c.client, ready.c.currency, bucket)
    ).all()
    out = []
    for row in rows:
        oldest = _aware(row.oldest)
        out.append(
            BucketSum(
                row.client,
                row.currency,
                BUCKETS[int(row.bucket)],
                Decimal(row.amount),
                int(row.entries),
                oldest.astimezone(tz).date() if oldest is not None else None,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class WaitingDraft:
    invoice_id: int
    client: str
    currency: str
    total: Decimal
    created_at: datetime
    stripe_invoice_id: str | None


def drafts_waiting(conn: Connection) -> list[WaitingDraft]:
    """Open drafts with lines and no approval yet (what finance still has to decide)."""
    total = func.coalesce(func.sum(t.entries.c.amount), 0)
    rows = conn.execute(
        select(
            t.invoices.c.id,
            t.invoices.c.client,
            t.invoices.c.currency,
            t.invoices.c.created_at,
            t.invoices.c.stripe_invoice_id,
            total.label("total"),
            func.count(t.entries.c.id).label("lines"),
        )
        .join(t.entries, t.entries.c.invoice_id == t.invoices.c.id)
        .outerjoin(t.approvals, t.approvals.c.invoice_id == t.invoices.c.id)
        .where(
            t.invoices.c.state == "draft",
            t.approvals.c.id.is_(None),
            t.entries.c.state == EntryState.DRAFTED.value,
        )
        .group_by(
            t.invoices.c.id,
            t.invoices.c.client,
            t.invoices.c.currency,
            t.invoices.c.created_at,
            t.invoices.c.stripe_invoice_id,
        )
        .order_by(t.invoices.c.id)
    ).all()
    return [
        WaitingDraft(
            int(r.id),
            r.client,
            r.currency,
            Decimal(r.total),
            _aware(r.created_at) or datetime.min.replace(tzinfo=UTC),
            r.stripe_invoice_id,
        )
        for r in rows
        if r.lines
    ]


@dataclass(frozen=True, slots=True)
class OpenInvoice:
    """A finalized or sent invoice with what overdue and reminders need."""

    invoice_id: int
    client: str
    currency: str
    state: str
    number: str | None
    total_minor: int | None
    amount: Decimal
    due_date: datetime | None
    overdue_at: datetime | None
    last_reminder_at: datetime | None
    reminders: int
    hosted_url: str | None
    stripe_invoice_id: str | None

    def overdue(self, now: datetime) -> bool:
        return is_overdue(self.state, self.due_date, now, self.overdue_at is not None)

    def days_overdue(self, now: datetime) -> int:
        return days_overdue(self.due_date or self.overdue_at, now)


def open_invoices(conn: Connection, overdue_only_at: datetime | None = None) -> list[OpenInvoice]:
    """Finalized or sent invoices; with `overdue_only_at`, only those overdue then."""
    amount = func.coalesce(func.sum(t.entries.c.amount), 0)
    query = (
        select(
            t.invoices.c.id,
            t.invoices.c.client,
            t.invoices.c.currency,
            t.invoices.c.state,
            t.invoices.c.number,
            t.invoices.c.total_minor,
            t.invoices.c.due_date,
            t.invoices.c.overdue_at,
            t.invoices.c.last_reminder_at,
            t.invoices.c.reminders,
            t.invoices.c.hosted_url,
            t.invoices.c.stripe_invoice_id,
            amount.label("amount"),
        )
        .outerjoin(
            t.entries,
            and_(
                t.entries.c.invoice_id == t.invoices.c.id,
                t.entries.c.state == EntryState.INVOICED.value,
            ),
        )
        .where(t.invoices.c.state.in_(sorted(OPEN_INVOICE_STATES)))
        .group_by(*[c for c in t.invoices.c if c.name in _OPEN_COLUMNS])
        .order_by(t.invoices.c.id)
    )
    if overdue_only_at is not None:
        query = query.where(
            or_(t.invoices.c.overdue_at.is_not(None), t.invoices.c.due_date < overdue_only_at)
        )
    out = [
        OpenInvoice(
            int(r.id),
            r.client,
            r.currency,
            r.state,
            r.number,
            r.total_minor,
            Decimal(r.amount),
            _aware(r.due_date),
            _aware(r.overdue_at),
            _aware(r.last_reminder_at),
            int(r.reminders or 0),
            r.hosted_url,
            r.stripe_invoice_id,
        )
        for r in conn.execute(query).all()
    ]
    if overdue_only_at is not None:
        out = [i for i in out if i.overdue(overdue_only_at)]
    return out


_OPEN_COLUMNS = frozenset(
    {
        "id",
        "client",
        "currency",
        "state",
        "number",
        "total_minor",
        "due_date",
        "overdue_at",
        "last_reminder_at",
        "reminders",
        "hosted_url",
        "stripe_invoice_id",
    }
)


def invoice_amount(invoice: OpenInvoice) -> Money:
    """What the client owes: Stripe's total when known (tax included), else the sum of
    the invoiced entries."""
    if invoice.total_minor is not None:
        return Money.from_minor_units(int(invoice.total_minor), invoice.currency)
    return Money(invoice.amount, invoice.currency).quantized()


def record_reminder(conn: Connection, invoice_id: int, now: datetime) -> None:
    """A reminder was sent: the interval counts from now."""
    conn.execute(
        update(t.invoices)
        .where(t.invoices.c.id == invoice_id)
        .values(last_reminder_at=now, reminders=t.invoices.c.reminders + 1)
    )
    audit(conn, now, "kanvoice", "reminder_sent", f"invoice:{invoice_id}")
