"""Ledger reads and writes for reviewing drafts: a draft's lines, the invoice history,
the audit log, and deferring a line to the next draft."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Select, select

from mapping.domain import EntryState
from sync.ledger import schema as t
from sync.ledger.ops import enqueue, leave_line, ledger_id, move_entry, queue_line_update
from sync.ledger.records import (
    ApprovalRecord,
    AuditRecord,
    DraftLineRecord,
    InvoiceRecord,
    Operation,
)


def deferral_reason(invoice_id: int) -> str:
    """The entry event that marks a line deferred from a draft: drafting never puts
    the entry back on that draft (it goes on the client's next one)."""
    return f"deferred from draft {invoice_id} to the next draft"


def deferred_from(invoice_id: int) -> Select[tuple[int]]:
    """Entry ids deferred from this draft (a subquery for drafting's ready lines)."""
    return select(t.entry_events.c.entry_id).where(
        t.entry_events.c.reason == deferral_reason(invoice_id)
    )


def _lines(invoice_id: int) -> Select[tuple[object, ...]]:
    e, i = t.entries, t.items
    return (
        select(
            e.c.id,
            e.c.kind,
            e.c.state,
            e.c.hours,
            e.c.rate,
            e.c.amount,
            e.c.currency,
            e.c.description,
            e.c.review_reason,
            e.c.stripe_invoice_item_id,
            e.c.done_at,
            i.c.title,
            i.c.url,
            i.c.board,
            i.c.iteration,
            i.c.assignees,
            i.c.external_id,
            i.c.milestone_amount,
        )
        .join(i, i.c.id == e.c.item_id)
        .where(e.c.invoice_id == invoice_id, e.c.state != EntryState.VOIDED.value)
        .order_by(e.c.id)
    )


def draft_lines(conn: Connection, invoice_id: int) -> list[DraftLineRecord]:
    """The entries on an invoice with their board item, oldest first (every state the
    invoice still holds: drafted, approved, invoiced, paid, needs review)."""
    return [DraftLineRecord.from_row(row) for row in conn.execute(_lines(invoice_id)).mappings()]


def drafted_line(conn: Connection, invoice_id: int, entry_id: int) -> DraftLineRecord | None:
    """The entry as a line of this draft, if it is on it and still only drafted."""
    query = _lines(invoice_id).where(
        t.entries.c.id == entry_id, t.entries.c.state == EntryState.DRAFTED.value
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else DraftLineRecord.from_row(row)


def invoices(conn: Connection, client: str | None = None) -> list[InvoiceRecord]:
    """Every invoice (newest first), optionally one client's."""
    query = select(t.invoices).order_by(t.invoices.c.id.desc())
    if client is not None:
        query = query.where(t.invoices.c.client == client)
    return [InvoiceRecord.from_row(r) for r in conn.execute(query).mappings()]


def approvals(conn: Connection) -> dict[int, ApprovalRecord]:
    """Every approval, by invoice id."""
    found = (ApprovalRecord.from_row(r) for r in conn.execute(select(t.approvals)).mappings())
    return {a.invoice_id: a for a in found}


def audit_rows(
    conn: Connection, since: datetime | None = None, actions: Sequence[str] | None = None
) -> list[AuditRecord]:
    """The audit log, oldest first, from `since` on (only `actions`, when given)."""
    query = select(t.audit_log).order_by(t.audit_log.c.id)
    if since is not None:
        query = query.where(t.audit_log.c.at >= since)
    if actions is not None:
        query = query.where(t.audit_log.c.action.in_(list(actions)))
    return [AuditRecord.from_row(r) for r in conn.execute(query).mappings()]


def invoice_clients(conn: Connection) -> dict[int, str]:
    return {
        int(r.id): str(r.client) for r in conn.execute(select(t.invoices.c.id, t.invoices.c.client))
    }


def item_clients(conn: Connection) -> dict[str, str]:
    return {
        str(r.item_key): str(r.client)
        for r in conn.execute(select(t.items.c.item_key, t.items.c.client))
    }


def defer_entry(
    conn: Connection,
    entry_id: int,
    invoice_id: int,
    stripe_item_id: str | None,
    actor: str,
    now: datetime,
) -> None:
    """The entry leaves the draft (back to ready, marked so this draft never takes it
    again); its Stripe line, if created, is deleted through the outbox."""
    move_entry(
        conn,
        entry_id,
        EntryState.READY,
        actor,
        deferral_reason(invoice_id),
        now,
        invoice_id=None,
        stripe_invoice_item_id=None,
    )
    # On a merged line: the line bills the others (or the next entry leads them).
    lead = leave_line(conn, entry_id, invoice_id, actor, now)
    if lead is not None:
        queue_line_update(conn, lead, invoice_id, now)
    if stripe_item_id:
        enqueue(
            conn,
            Operation.DELETE_INVOICE_ITEM,
            f"kv-{ledger_id(conn)}-e{entry_id}-inv{invoice_id}-delete-{stripe_item_id}",
            now,
            entry_id=entry_id,
            invoice_id=invoice_id,
            payload={"stripe_invoice_item_id": stripe_item_id},
        )
