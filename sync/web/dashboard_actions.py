"""The dashboard's buttons, done by the same invoicing code as the CLI and Slack."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from mapping.review import parse_since
from sync.approvals import ApprovalDesk
from sync.composition import Services
from sync.draft_all import draft_all
from sync.review import InvalidChange, Review


class InvoicingActions:
    """`DashboardActions` over `Invoicing`: same authorization and audit as elsewhere."""

    def __init__(self, services: Services, desk: ApprovalDesk | None = None) -> None:
        self.services = services
        self.desk = desk
        self.review = Review(desk or services.desk)

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

    def draft_all(self) -> dict[str, Any]:
        """"Draft all due" (`sync.draft_all`): the approval requests are queued only when
        the dashboard has a desk (as for "Create draft now")."""
        desk = self.desk
        request = desk.request_approval if desk is not None else None
        report = draft_all(self.services.invoicing, request, "dashboard")
        return report.to_json()

    def approve(self, invoice_id: str, approver: str, force: bool = False) -> dict[str, Any]:
        return self.services.invoicing.approve(_id(invoice_id), approver, "dashboard", force=force)

    def reject(self, invoice_id: str, approver: str, reason: str) -> dict[str, Any]:
        return self.services.invoicing.reject(_id(invoice_id), approver, "dashboard", reason)

    def list_drafts(self, client: str) -> list[dict[str, Any]]:
        """Open drafts with their lines (the dashboard expands them in place)."""
        drafts = []
        for detail in self.review.open_drafts(client):
            drafts.append(
                {
                    "id": detail["id"],
                    "client": client,
                    "client_name": detail["client_name"],
                    "period": detail["period"],
                    "total": detail["total"],
                    "currency": detail["currency"],
                    "state": "approved" if detail["approved_by"] else "draft",
                    "version": detail["version"],
                    "lines": len(detail["lines"]),
                    "auto_send": detail["auto_send"],
                    "stripe_invoice_id": detail["stripe_invoice_id"],
                    "detail": detail,
                }
            )
        return drafts

    # ---- review (sync.review) --------------------------------------------------------

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        return self.review.detail(_id(invoice_id))

    def adjust(
        self, invoice_id: str, who: str, version: int, changes: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return self.review.adjust(_id(invoice_id), who, version, changes, "dashboard")

    def defer(self, invoice_id: str, who: str, version: int, entry_id: int) -> dict[str, Any]:
        return self.review.defer(_id(invoice_id), who, version, entry_id, "dashboard")

    def history(self, client: str | None, query: str) -> list[dict[str, Any]]:
        return self.review.history(client, query)

    def audit(self, client: str | None, since: str | None) -> list[dict[str, Any]]:
        return self.review.audit_log(client, self._since(since))

    def audit_csv(self, client: str | None, since: str | None) -> str:
        return self.review.audit_csv(client, self._since(since))

    def _since(self, since: str | None) -> datetime | None:
        if not since:
            return None
        try:
            return parse_since(since, self.review.zone)
        except ValueError as exc:
            raise InvalidChange(str(exc)) from None

    def time_zone(self) -> str:
        return self.review.zone


_INVOICE_ID = re.compile(r"[1-9][0-9]{0,9}")


def _id(invoice_id: str) -> int:
    """The invoice id of a dashboard path: digits only (no sign, space, exponent or
    leading zero) and within the id column's range, else `LookupError` (404)."""
    if not _INVOICE_ID.fullmatch(invoice_id) or int(invoice_id) >= 2**31:
        raise LookupError(f"no invoice {invoice_id[:40]!r}: invoice ids are positive integers")
    return int(invoice_id)
