"""Ledger writes shared by the engine and invoicing: audited entry moves, the outbox."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from mapping.domain import EntryState
from sync.ledger import lines
from sync.ledger import schema as t
from sync.ledger.records import InvoiceRecord, Operation, OutboxStatus


def _entry_event(
    conn: Connection,
    entry_id: int,
    from_state: str,
    to_state: EntryState,
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    row = conn.execute(
        select(t.entries.c.hours, t.entries.c.amount).where(t.entries.c.id == entry_id)
    ).one()
    conn.execute(
        insert(t.entry_events).values(
            entry_id=entry_id,
            from_state=from_state,
            to_state=to_state.value,
            hours=row.hours,
            amount=row.amount,
            actor=actor,
            reason=reason,
            at=now,
        )
    )


def move_entry(
    conn: Connection,
    entry_id: int,
    to_state: EntryState,
    actor: str,
    reason: str,
    now: datetime,
    **values: object,
) -> None:
    """Change an entry's state (and other columns) with its audit row."""
    current = conn.execute(select(t.entries.c.state).where(t.entries.c.id == entry_id)).scalar_one()
    conn.execute(
        update(t.entries)
        .where(t.entries.c.id == entry_id)
        .values(state=to_state.value, updated_at=now, **values)
    )
    _entry_event(conn, entry_id, current, to_state, actor, reason, now)


def ledger_id(conn: Connection) -> str:
    return str(
        conn.execute(
            select(t.ledger_meta.c.value).where(t.ledger_meta.c.key == "ledger_id")
        ).scalar_one()
    )


def enqueue(
    conn: Connection,
    operation: Operation | str,
    key: str,
    now: datetime,
    *,
    entry_id: int | None = None,
    invoice_id: int | None = None,
    payload: Mapping[str, object] | None = None,
) -> bool:
    """Add an outbox row unless one with the same key exists (returns whether added).

    The key is the idempotency key of the external call: the same decision made twice
    queues one call. `operation` is an `Operation` (its value is accepted too; any other
    name is refused before anything is written)."""
    operation = Operation(operation)
    exists = conn.execute(select(t.outbox.c.id).where(t.outbox.c.idempotency_key == key)).first()
    if exists:
        return False
    conn.execute(
        insert(t.outbox).values(
            idempotency_key=key,
            operation=operation.value,
            entry_id=entry_id,
            invoice_id=invoice_id,
            payload=dict(payload or {}),
            status=OutboxStatus.PENDING.value,
            attempts=0,
            created_at=now,
        )
    )
    return True


def bump_version(conn: Connection, invoice_id: int, now: datetime) -> None:
    """The draft's lines changed: approvals of the previous version no longer apply."""
    conn.execute(
        update(t.invoices)
        .where(t.invoices.c.id == invoice_id)
        .values(version=t.invoices.c.version + 1, updated_at=now)
    )


def queue_draft_edits(conn: Connection, entry_ids: list[int], now: datetime) -> None:
    """Entries on a draft changed on the board: queue the matching Stripe edits.

    Called by the engine in the transaction that changed them. A drafted entry with new
    hours gets an update of its line (of the merged line it is on: the lead's); a
    drafted entry voided (hours gone before invoicing) leaves the draft and its line is
    deleted, or, on a merged line, the line is updated to bill the others
    (`leave_line`). Approved and later entries are never edited here (the billing core
    sends those to review)."""
    if not entry_ids:
        return
    prefix = f"kv-{ledger_id(conn)}"
    rows = conn.execute(
        select(
            t.entries.c.id,
            t.entries.c.state,
            t.entries.c.invoice_id,
            t.entries.c.stripe_invoice_item_id,
        ).where(t.entries.c.id.in_(entry_ids), t.entries.c.invoice_id.is_not(None))
    ).all()
    updates: dict[int, int] = {}  # the line's entry (lead) -> its invoice
    for row in rows:
        if row.state == EntryState.DRAFTED.value:
            updates[lines.lead_of(conn, row.id) or row.id] = row.invoice_id
        elif row.state == EntryState.VOIDED.value:
            conn.execute(
                update(t.entries)
                .where(t.entries.c.id == row.id)
                .values(invoice_id=None, stripe_invoice_item_id=None)
            )
            lead = leave_line(conn, row.id, row.invoice_id, "kanvoice", now)
            if lead is not None:
                updates[lead] = row.invoice_id
            if row.stripe_invoice_item_id:
                enqueue(
                    conn,
                    Operation.DELETE_INVOICE_ITEM,
                    f"{prefix}-e{row.id}-inv{row.invoice_id}-delete-{row.stripe_invoice_item_id}",
                    now,
                    entry_id=row.id,
                    invoice_id=row.invoice_id,
                    payload={"stripe_invoice_item_id": row.stripe_invoice_item_id},
                )
            bump_version(conn, row.invoice_id, now)
    for entry_id, invoice_id in updates.items():
        queue_line_update(conn, entry_id, invoice_id, now)


def queue_line_update(conn: Connection, entry_id: int, invoice_id: int, now: datetime) -> None:
    """Queue an update of the entry's Stripe line (its current values, read when the
    call is made) and bump the draft's version."""
    count = conn.execute(
        select(t.outbox.c.id).where(
            t.outbox.c.entry_id == entry_id, t.outbox.c.operation == "update_invoice_item"
        )
    ).all()
    enqueue(
        conn,
        "update_invoice_item",
        f"kv-{ledger_id(conn)}-e{entry_id}-inv{invoice_id}-update{len(count) + 1}",
        now,
        entry_id=entry_id,
        invoice_id=invoice_id,
    )
    bump_version(conn, invoice_id, now)


def queue_line_create(conn: Connection, entry_id: int, invoice_id: int, now: datetime) -> None:
    """Queue the create of the entry's Stripe line on the invoice (a line taken off and
    put back, or led by another entry since, needs a new key: the count)."""
    count = conn.execute(
        select(t.outbox.c.id).where(
            t.outbox.c.entry_id == entry_id,
            t.outbox.c.invoice_id == invoice_id,
            t.outbox.c.operation == "create_invoice_item",
        )
    ).all()
    enqueue(
        conn,
        "create_invoice_item",
        f"kv-{ledger_id(conn)}-e{entry_id}-inv{invoice_id}-item{len(count) + 1}",
        now,
        entry_id=entry_id,
        invoice_id=invoice_id,
    )


def leave_line(
    conn: Connection, entry_id: int, invoice_id: int, actor: str, now: datetime
) -> int | None:
    """The entry leaves its draft (voided, deferred) while on a merged line; returns
    the lead whose line must be updated to bill the rest (None: nothing to update).

    A member leaves the line: the lead's line bills the others. The lead leaves: the
    caller deletes its Stripe line, the next entry leads the rest and a create of its
    line is queued (the others stay on the draft)."""
    lead = lines.lead_of(conn, entry_id)
    if lead is None:
        return None
    lines.unlink(conn, [entry_id])
    rest = lines.members_of(conn, lead)
    if lead != entry_id:
        if not rest:
            lines.unlink_line(conn, lead)
        return lead
    if not rest:
        return None
    new_lead, others = rest[0], rest[1:]
    lines.unlink_line(conn, lead)
    if others:
        lines.link(conn, new_lead, others, invoice_id)
    conn.execute(
        update(t.entries)
        .where(t.entries.c.id == new_lead)
        .values(stripe_invoice_item_id=None, updated_at=now)
    )
    queue_line_create(conn, new_lead, invoice_id, now)
    bump_version(conn, invoice_id, now)
    audit(
        conn,
        now,
        actor,
        "line_lead_changed",
        f"invoice:{invoice_id}",
        left=entry_id,
        lead=new_lead,
        entries=[new_lead, *others],
    )
    return None


def audit(
    conn: Connection, now: datetime, actor: str, action: str, subject: str, **detail: object
) -> None:
    """One row of the audit log (decisions, refusals, anything a person may ask about)."""
    conn.execute(
        insert(t.audit_log).values(
            at=now, actor=actor, action=action, subject=subject, detail=detail
        )
    )


def invoice_row(conn: Connection, invoice_id: int, lock: bool = False) -> InvoiceRecord:
    """The invoice row, or LookupError; `lock` holds it (FOR UPDATE on PostgreSQL) until
    the transaction ends, so decisions on one draft never interleave."""
    query = select(t.invoices).where(t.invoices.c.id == invoice_id)
    if lock:
        query = query.with_for_update()
    invoice = conn.execute(query).mappings().first()
    if invoice is None:
        raise LookupError(f"no invoice {invoice_id}")
    return InvoiceRecord.from_row(invoice)
