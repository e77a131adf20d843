"""The dashboard's buttons, done by the same invoicing code as the CLI and Slack."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from mapping.domain import EntryState
from mapping.money import Money
from sync.approvals import ApprovalDesk
from sync.composition import Services
from sync.ledger import schema as t


class InvoicingActions:
    """`DashboardActions` over `Invoicing`: same authorization and audit as elsewhere."""

    def __init__(self, services: Services, desk: ApprovalDesk | None = None) -> None:
        self.services = services
        self.desk = desk

    def create_draft(self, client: str) -> dict[str, Any]:
        result = self.services.invoicing.create_or_refresh_draft(client, actor="dashboard")
        if result.invoice_id is None:
            return {
                "invoice_id": None,
                "period": result.period,
                "added": 0,
                "lines": 0,
                "message": f"nothing to bill for {client}: no ready lines, no draft created",
            }
        if self.desk is not None and result.lines:
            self.desk.request_approval(result.invoice_id, actor="dashboard")
        return {
            "invoice_id": result.invoice_id,
            "period": result.period,
            "added": result.added,
            "lines": result.lines,
            "total": str(result.total.amount),
            "currency": result.total.currency,
        }

    def approve(self, invoice_id: str, approver: str, force: bool = False) -> dict[str, Any]:
        return self.services.invoicing.approve(_id(invoice_id), approver, "dashboard", force=force)

    def reject(self, invoice_id: str, approver: str, reason: str) -> dict[str, Any]:
        return self.services.invoicing.reject(_id(invoice_id), approver, "dashboard", reason or "-")

    def list_drafts(self, client: str) -> list[dict[str, Any]]:
        with self.services.ledger.engine.connect() as conn:
            invoices = conn.execute(
                select(t.invoices)
                .where(t.invoices.c.client == client, t.invoices.c.state == "draft")
                .order_by(t.invoices.c.id)
            ).all()
            drafts = []
            for invoice in invoices:
                total, lines = conn.execute(
                    select(func.coalesce(func.sum(t.entries.c.amount), 0), func.count()).where(
                        t.entries.c.invoice_id == invoice.id,
                        t.entries.c.state.in_(
                            [EntryState.DRAFTED.value, EntryState.APPROVED.value]
                        ),
                    )
                ).one()
                if not lines:
                    continue
                approved = conn.execute(
                    select(t.approvals.c.approver).where(t.approvals.c.invoice_id == invoice.id)
                ).scalar()
                drafts.append(
                    {
                        "id": invoice.id,
                        "client": client,
                        "period": invoice.period_key,
                        "total": str(Money(Decimal(total), invoice.currency).quantized().amount),
                        "currency": invoice.currency,
                        "state": "approved" if approved else "draft",
                        "version": invoice.version,
                        "lines": int(lines),
                        "stripe_invoice_id": invoice.stripe_invoice_id,
                    }
                )
        return drafts


_INVOICE_ID = re.compile(r"[1-9][0-9]{0,9}")


def _id(invoice_id: str) -> int:
    """The invoice id of a dashboard path: digits only (no sign, space, exponent or
    leading zero) and within the id column's range, else `LookupError` (404)."""
    if not _INVOICE_ID.fullmatch(invoice_id) or int(invoice_id) >= 2**31:
        raise LookupError(f"no invoice {invoice_id[:40]!r}: invoice ids are positive integers")
    return int(invoice_id)
