"""Rows leave the ledger as typed records: every column of their table, states and
operation names as enums, times aware UTC, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Table, insert

from mapping.domain import EntryKind, EntryState
from mapping.invoices import InvoiceState
from sync.engine import Engine
from sync.ledger import invoices as inv
from sync.ledger import ops
from sync.ledger import outbox as ob
from sync.ledger import review as q
from sync.ledger import schema as t
from sync.ledger.records import (
    ApprovalRecord,
    AuditRecord,
    EntryLineRecord,
    EntryRecord,
    InvoiceRecord,
    Operation,
    OutboxStatus,
)
from sync.ledger.store import Ledger
from tests.builders import policy, snap
from tests.conftest import FixedClock

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    the_ledger = Ledger(ledger_url)
    the_ledger.upgrade()
    yield the_ledger
    the_ledger.dispose()


def _names(record: type[object]) -> set[str]:
    assert dataclasses.is_dataclass(record)
    return {f.name for f in dataclasses.fields(record)}


@pytest.mark.parametrize(
    ("record", "table"),
    [
        (InvoiceRecord, t.invoices),
        (ApprovalRecord, t.approvals),
        (AuditRecord, t.audit_log),
        (ob.OutboxOp, t.outbox),
        (EntryRecord, t.entries),
    ],
)
def test_a_record_names_every_column_of_its_table(record: type[object], table: Table) -> None:
    """A migration that adds a column must add it to the record (or it is never read)."""
    assert _names(record) == {c.name for c in table.columns}


def _draft(ledger: Ledger) -> int:
    with ledger.engine.begin() as conn:
        invoice_id = conn.execute(
            insert(t.invoices)
            .values(
                client="acme",
                period_key="2026-11",
                currency="EUR",
                state="draft",
                open_slot="acme|2026-11",
                created_at=NOW,
                updated_at=NOW,
            )
            .returning(t.invoices.c.id)
        ).scalar_one()
        ops.audit(conn, NOW, "fin", "drafted", f"invoice:{invoice_id}", reason="month end")
    return int(invoice_id)


def test_invoices_approvals_and_audit_rows_come_back_typed(ledger: Ledger) -> None:
    invoice_id = _draft(ledger)
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(t.approvals).values(
                invoice_id=invoice_id,
                approver="fin",
                channel="cli",
                total_minor=12000,
                decided_at=NOW,
            )
        )
    with ledger.engine.connect() as conn:
        invoice = ops.invoice_row(conn, invoice_id)
        (listed,) = q.invoices(conn, "acme")
        approval = q.approvals(conn)[invoice_id]
        (row,) = q.audit_rows(conn)
        with pytest.raises(LookupError):
            ops.invoice_row(conn, invoice_id + 1)
    assert isinstance(invoice, InvoiceRecord) and listed == invoice
    assert invoice.state is InvoiceState.DRAFT and invoice.state == "draft"
    assert (invoice.version, invoice.stripe_invoice_id, invoice.total_minor) == (0, None, None)
    assert invoice.created_at == NOW and invoice.created_at.tzinfo is not None
    assert approval == ApprovalRecord(approval.id, invoice_id, "fin", "cli", 12000, NOW)
    assert row == AuditRecord(row.id, NOW, "fin", "drafted", f"invoice:{invoice_id}", row.detail)
    assert row.detail == {"reason": "month end"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        invoice.state = InvoiceState.PAID  # type: ignore[misc]


def test_outbox_rows_carry_their_operation_and_status_as_enums(ledger: Ledger) -> None:
    invoice_id = _draft(ledger)
    with ledger.engine.begin() as conn:
        assert ops.enqueue(conn, Operation.CREATE_INVOICE, "k-1", NOW, invoice_id=invoice_id)
        assert not ops.enqueue(conn, "create_invoice", "k-1", NOW, invoice_id=invoice_id)
        (op,) = ob.ops_for(conn, invoice_id=invoice_id)
    assert op.operation is Operation.CREATE_INVOICE and op.status is OutboxStatus.PENDING
    assert op.created_at == NOW


def test_an_unknown_operation_name_is_refused_before_anything_is_written(
    ledger: Ledger,
) -> None:
    invoice_id = _draft(ledger)
    with pytest.raises(ValueError, match="create_invoise"), ledger.engine.begin() as conn:
        ops.enqueue(conn, "create_invoise", "k-2", NOW, invoice_id=invoice_id)
    with ledger.engine.connect() as conn:
        assert ob.ops_for(conn, invoice_id=invoice_id) == []


def test_pipeline_rows_use_the_domain_enums_and_exact_decimals(ledger: Ledger) -> None:
    engine = Engine(ledger, {"web": policy()}, FixedClock(NOW))
    engine.ingest([snap("Done", "2", 1, item_id="A1")])
    with ledger.read(NOW) as uow:
        (summed,) = uow.pipeline_rows()
    assert summed.state is EntryState.READY and summed.kind is EntryKind.TIME
    assert (summed.entries, summed.hours) == (1, Decimal("2"))


def test_entries_leave_the_ledger_typed_with_their_items(ledger: Ledger) -> None:
    """What drafting and the Stripe writer read of an entry (`sync.ledger.invoices`):
    the domain's enums, exact Decimals, aware times, and its item's fields."""
    engine = Engine(ledger, {"web": policy()}, FixedClock(NOW))
    engine.ingest([snap("Done", "2.5", 1, item_id="A1")])
    invoice_id = _draft(ledger)
    with ledger.engine.connect() as conn:
        (entry_id,) = inv.ready_entry_ids(conn, "acme", "EUR")
        line = inv.entry_line(conn, entry_id)
        (grouped,) = inv.grouping_lines(conn, [entry_id], invoice_id)
        assert inv.entries_on(conn, invoice_id, inv.ON_DRAFT) == []
        assert inv.invoice_total(conn, invoice_id) == (Decimal(0), 0)
        assert inv.approval_of(conn, invoice_id) is None
        assert inv.find_invoice(conn, invoice_id + 1) is None
        assert inv.last_decision(conn, invoice_id) is None
    assert isinstance(line, EntryLineRecord) and grouped == line
    assert line.kind is EntryKind.TIME and line.state is EntryState.READY
    assert line.hours == Decimal("2.5") and line.created_at.tzinfo is not None
    assert (line.board, line.invoice_id, line.stripe_invoice_item_id) == ("web", None, None)
    assert line.item_key.endswith("A1") and line.external_id == "A1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        line.state = EntryState.PAID  # type: ignore[misc]
