"""Ledger reads and writes for the draft decisions of `mapping.invoices`: the view a
decision is asked about (`draft_view`), and applying an Adjust's write-offs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, insert, select

from mapping.domain import EntryKind, EntryState, entry_key
from mapping.invoices import DraftView, LineView, WriteOff, invoice_state
from sync.ledger import schema as t

ON_DRAFT = (EntryState.DRAFTED.value, EntryState.APPROVED.value)


def draft_view(conn: Connection, invoice_id: int) -> DraftView | None:
    """The invoice and its drafted / approved lines, as the decisions see them (None:
    no such invoice)."""
    invoice = conn.execute(select(t.invoices).where(t.invoices.c.id == invoice_id)).first()
    if invoice is None:
        return None
    approved_by = conn.execute(
        select(t.approvals.c.approver).where(t.approvals.c.invoice_id == invoice_id)
    ).scalar_one_or_none()
    rows = conn.execute(
        select(t.entries, t.items.c.item_key)
        .join(t.items, t.items.c.id == t.entries.c.item_id)
        .where(t.entries.c.invoice_id == invoice_id, t.entries.c.state.in_(ON_DRAFT))
        .order_by(t.entries.c.id)
    ).all()
    return DraftView(
        invoice_id=invoice_id,
        client=invoice.client,
        state=invoice_state(invoice.state),
        version=int(invoice.version),
        currency=invoice.currency,
        approved_by=approved_by,
        lines=tuple(
            LineView(
                entry_id=int(r.id),
                item_key=r.item_key,
                kind=EntryKind(r.kind),
                seq=int(r.seq),
                state=EntryState(r.state),
                hours=r.hours,
                rate=r.rate,
                amount=r.amount,
                currency=r.currency,
                description=r.description or "",
                invoice_id=r.invoice_id,
                stripe_item_id=r.stripe_invoice_item_id,
            )
            for r in rows
        ),
    )


def time_seqs(conn: Connection, item_keys: Iterable[str]) -> dict[str, list[int]]:
    """The time-entry seqs each item has used, in any state (a write-off takes the next
    one: `mapping.invoices.write_off`)."""
    keys = sorted(set(item_keys))
    if not keys:
        return {}
    seqs: dict[str, list[int]] = {key: [] for key in keys}
    for row in conn.execute(
        select(t.items.c.item_key, t.entries.c.seq)
        .join(t.items, t.items.c.id == t.entries.c.item_id)
        .where(t.items.c.item_key.in_(keys), t.entries.c.kind == EntryKind.TIME.value)
    ).all():
        seqs[row.item_key].append(int(row.seq))
    return seqs


def record_write_off(conn: Connection, off: WriteOff, now: datetime) -> int:
    """Insert the decided write-off: a voided time entry of the same item (and person:
    the written-off hours stay theirs), with its entry event. Returns its id."""
    source = conn.execute(select(t.entries).where(t.entries.c.id == off.from_entry_id)).one()
    amount = off.amount.amount if off.amount is not None else None
    new_id = int(
        conn.execute(
            insert(t.entries).values(
                entry_key=entry_key(off.item_key, EntryKind.TIME, off.seq, source.person),
                person=source.person,
                role=source.role,
                item_id=source.item_id,
                client=source.client,
                kind=EntryKind.TIME.value,
                seq=off.seq,
                state=EntryState.VOIDED.value,
                hours=off.hours,
                rate=off.rate,
                amount=amount,
                currency=source.currency,
                description=off.reason,
                done_at=source.done_at,
                invoice_id=None,
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    )
    conn.execute(
        insert(t.entry_events).values(
            entry_id=new_id,
            from_state=None,
            to_state=EntryState.VOIDED.value,
            hours=off.hours,
            amount=amount,
            actor=off.who,
            reason=f"{off.reason}: {off.hours} h of entry #{off.from_entry_id}",
            at=now,
        )
    )
    return new_id
