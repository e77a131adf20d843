"""Reviewing invoices before and after approval: a draft's lines, adjusting and
deferring lines (the Slack Adjust rules, through `ApprovalDesk`), the invoice history
and the audit log. Used by the dashboard (`/api/invoices/{id}`, `/api/history`,
`/api/audit`) and the CLI (`kanvoice status --lines`, `kanvoice audit`).

Deferring a line, as chosen here: the entry goes back to ready with an entry event
`deferred from draft N to the next draft`; drafting never puts it back on draft N (a
refresh of the same period leaves it out), so it goes on the client's next draft,
the one opened after N is approved. Its Stripe line is deleted through the outbox,
as a rejection does; the draft's version is bumped (older approvals are stale).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection

from connectors.slack import LineAdjustment
from mapping.domain import EntryState
from mapping.invoices import draft_refusal
from mapping.money import Money
from mapping.review import (
    INVOICE_EVENTS,
    audit_csv,
    history_status,
    human_time,
    iso_time,
    line_flags,
    matches,
)
from sync.approvals import ApprovalDesk
from sync.budgets import draft_budget
from sync.invoicing import NotAnApprover
from sync.ledger import lines as line_links
from sync.ledger import review as q
from sync.ledger.drafts import draft_view
from sync.ledger.ops import audit, bump_version, invoice_row
from sync.settings import stripe_dashboard_url

MAX_DESCRIPTION = 500
OPEN_STATES = (EntryState.DRAFTED.value, EntryState.APPROVED.value)


class InvalidChange(ValueError):
    """A change that cannot be applied as asked (HTTP 422); the message says why."""


class Review:
    """Read and adjust invoices the way finance reviews them."""

    def __init__(self, desk: ApprovalDesk) -> None:
        self.desk = desk
        self.settings = desk.settings
        self.ledger = desk.ledger
        self.clock = desk.clock

    @property
    def zone(self) -> str:
        return self.settings.finance.timezone

    def _when(self, moment: datetime | None) -> dict[str, str | None]:
        return {"at": iso_time(moment), "at_local": human_time(moment, self.zone)}

    def _client_name(self, key: str) -> str:
        try:
            return self.settings.client(key).name or key
        except KeyError:
            return key

    def _auto_send(self, key: str) -> bool:
        try:
            return self.settings.client(key).auto_send
        except KeyError:
            return False

    # ---- a draft's lines -------------------------------------------------------------

    def detail(self, invoice_id: int) -> dict[str, Any]:
        """An invoice with its lines, totals, tax and Stripe link (LookupError if none)."""
        with self.ledger.engine.connect() as conn:
            invoice = invoice_row(conn, invoice_id)
            rows = q.draft_lines(conn, invoice_id)
            approval = q.approvals(conn).get(invoice_id)
            # Over budget (issue 19): the draft's flags and the lines past the cap.
            budget = draft_budget(conn, self.settings, invoice)
            leads = line_links.leads_on(conn, invoice_id)
        linked = {int(r.id) for r in rows if r.stripe_invoice_item_id}
        currency = str(invoice.currency)
        lines = []
        subtotal = Decimal(0)
        for r in rows:
            amount = Money(r.amount or Decimal(0), currency).quantized().amount
            if r.state in OPEN_STATES or invoice.state != "draft":
                subtotal += amount
            lines.append(
                {
                    "entry_id": int(r.id),
                    "title": str(r.title),
                    "url": str(r.url or ""),
                    "item": str(r.external_id),
                    "board": str(r.board),
                    "sprint": r.iteration,
                    "people": list(r.assignees or []),
                    "kind": str(r.kind),
                    "hours": str(r.hours),
                    "rate": None if r.rate is None else str(r.rate),
                    "amount": str(amount),
                    "state": str(r.state),
                    "description": str(r.description or ""),
                    "flags": line_flags(str(r.state), str(r.kind), r.rate, r.review_reason)
                    + list(budget.lines.get(int(r.id), ())),
                    # On a merged line: on Stripe once the line (its lead's) is.
                    "on_stripe": leads.get(int(r.id), int(r.id)) in linked,
                    "editable": invoice.state == "draft"
                    and approval is None
                    and r.state == EntryState.DRAFTED.value,
                }
            )
        client = self._client_tax(str(invoice.client))
        total = Money(subtotal, currency).quantized().amount
        return {
            "id": int(invoice.id),
            "client": str(invoice.client),
            "client_name": self._client_name(str(invoice.client)),
            "period": str(invoice.period_key),
            "state": str(invoice.state),
            "version": int(invoice.version),
            "currency": currency,
            "auto_send": self._auto_send(str(invoice.client)),
            "lines": lines,
            "subtotal": str(total),
            "tax": client,
            "total": str(total),
            "stripe_total": None
            if invoice.total_minor is None
            else str(Money.from_minor_units(int(invoice.total_minor), currency).amount),
            "stripe_invoice_id": invoice.stripe_invoice_id,
            "stripe_url": stripe_dashboard_url(self.settings, invoice.stripe_invoice_id),
            "number": invoice.number,
            "approved_by": approval.approver if approval is not None else None,
            "approved": self._when(approval.decided_at) if approval is not None else None,
            "updated": self._when(invoice.updated_at),
            "over_budget": budget.over,
            "budget_flags": list(budget.flags),
            "budgets": list(budget.budgets),
        }

    def _client_tax(self, key: str) -> dict[str, Any]:
        try:
            rates = list(self.settings.client(key).tax_rate_ids)
        except KeyError:
            rates = []
        if not rates:
            return {"rates": [], "note": "no tax rates: the total is the amount due"}
        return {
            "rates": rates,
            "note": "tax added by Stripe from the client's tax rates (" + ", ".join(rates) + ")",
        }

    def open_drafts(self, client: str) -> list[dict[str, Any]]:
        """Every draft of the client (approved ones too, until finalized), with lines."""
        with self.ledger.engine.connect() as conn:
            ids = [int(r.id) for r in q.invoices(conn, client) if r.state == "draft"]
        drafts = [self.detail(invoice_id) for invoice_id in sorted(ids)]
        return [d for d in drafts if any(line["state"] in OPEN_STATES for line in d["lines"])]

    # ---- adjusting -------------------------------------------------------------------

    def adjust(
        self, invoice_id: int, who: str, version: int, changes: list[dict[str, Any]], channel: str
    ) -> dict[str, Any]:
        """Edit hours (lowered only, the rest written off) or descriptions, or write off
        whole lines, with the Slack Adjust rules. Each change: `entry_id` plus `hours`,
        `description` and/or `write_off: true`."""
        adjustments = tuple(_adjustment(change) for change in changes)
        if not adjustments:
            raise InvalidChange("no change given")
        reply = self.desk.adjust_lines(invoice_id, who, version, adjustments, channel)
        if reply.outcome == "refused":
            raise NotAnApprover(reply.notice or f"{who} is not an approver")
        if reply.outcome == "not_applicable":
            raise ValueError(reply.notice or "the draft cannot be adjusted now")
        if reply.outcome == "invalid":
            errors = (reply.body or {}).get("errors", {})
            raise InvalidChange("; ".join(str(v) for v in errors.values()) or "invalid change")
        return self.detail(invoice_id)

    def defer(
        self, invoice_id: int, who: str, version: int, entry_id: int, channel: str
    ) -> dict[str, Any]:
        """Move one drafted line off this draft to the client's next one."""
        now = self.clock()
        if not self.desk.invoicing.is_approver(who):
            with self.ledger.engine.begin() as conn:
                audit(conn, now, who, "defer_refused", f"invoice:{invoice_id}", channel=channel)
            raise NotAnApprover(f"{who} is not an approver")
        with self.ledger.engine.begin() as conn:
            invoice_row(conn, invoice_id, lock=True)  # LookupError if none; held
            # The rule of every decision on a draft: undecided, at the version seen.
            refused = draft_refusal(draft_view(conn, invoice_id), version)
            if refused is not None:
                raise ValueError(refused.message)
            line = q.drafted_line(conn, invoice_id, entry_id)
            if line is None:
                raise InvalidChange(f"line {entry_id} is not on draft {invoice_id}")
            q.defer_entry(conn, entry_id, invoice_id, line.stripe_invoice_item_id, who, now)
            bump_version(conn, invoice_id, now)
            audit(
                conn,
                now,
                who,
                "deferred",
                f"invoice:{invoice_id}",
                channel=channel,
                entry_id=entry_id,
                from_version=version,
                to_version=version + 1,
            )
        self.desk.request_approval(invoice_id, actor=who)
        return self.detail(invoice_id)

    # ---- history and audit ------------------------------------------------------------

    def audit_log(
        self,
        client: str | None = None,
        since: datetime | None = None,
        actions: tuple[str, ...] | None = None,
    ) -> list[dict[str, Any]]:
        """Audit rows (oldest first) with the client and invoice they concern."""
        with self.ledger.engine.connect() as conn:
            rows = q.audit_rows(conn, since, actions)
            invoice_clients = q.invoice_clients(conn)
            numbers = {int(r.id): r.number for r in q.invoices(conn)}
            item_clients = (
                q.item_clients(conn)
                if any(str(r.subject).startswith("item:") for r in rows)
                else {}
            )
        result = []
        for r in rows:
            kind, _, ref = str(r.subject).partition(":")
            invoice_id = int(ref) if kind == "invoice" and ref.isdigit() else None
            owner = (
                invoice_clients.get(invoice_id)
                if invoice_id is not None
                else item_clients.get(ref)
                if kind == "item"
                else None
            )
            detail = dict(r.detail or {})
            if client is not None and owner != client:
                continue
            result.append(
                {
                    "id": int(r.id),
                    **self._when(r.at),
                    "actor": str(r.actor),
                    "action": str(r.action),
                    "subject": str(r.subject),
                    "client": owner,
                    "invoice_id": invoice_id,
                    "number": numbers.get(invoice_id) if invoice_id is not None else None,
                    "reason": detail.get("reason"),
                    "detail": detail,
                }
            )
        return result

    def audit_csv(self, client: str | None = None, since: datetime | None = None) -> str:
        return audit_csv(self.audit_log(client, since))

    def history(self, client: str | None = None, query: str = "") -> list[dict[str, Any]]:
        """Every invoice, newest first, with its life from the audit log (who, when,
        why) and Stripe's number; `query` keeps the rows containing every word."""
        events: dict[int, list[dict[str, Any]]] = {}
        for row in self.audit_log(client, actions=tuple(INVOICE_EVENTS)):
            if row["invoice_id"] is None or row["action"] not in INVOICE_EVENTS:
                continue
            events.setdefault(row["invoice_id"], []).append(
                {
                    "action": row["action"],
                    "label": INVOICE_EVENTS[row["action"]],
                    "actor": row["actor"],
                    "at": row["at"],
                    "at_local": row["at_local"],
                    "reason": row["reason"],
                }
            )
        with self.ledger.engine.connect() as conn:
            invoices = q.invoices(conn, client)
            approvals = q.approvals(conn)
            # Decided invoices carry their total (approval, Stripe); only drafts are summed.
            totals = {
                int(r.id): self._open_total(conn, int(r.id), str(r.currency))
                if r.state == "draft"
                else (Decimal(0), 0)
                for r in invoices
            }
        result = []
        for inv in invoices:
            approval = approvals.get(int(inv.id))
            timeline = events.get(int(inv.id), [])
            decisions = [e["action"] for e in timeline if e["action"] in ("approved", "rejected")]
            total, lines = totals[int(inv.id)]
            if approval is not None:
                total = Money.from_minor_units(int(approval.total_minor), inv.currency).amount
            if inv.total_minor is not None:
                total = Money.from_minor_units(int(inv.total_minor), inv.currency).amount
            rejection = next((e for e in reversed(timeline) if e["action"] == "rejected"), None)
            row = {
                "id": int(inv.id),
                "client": str(inv.client),
                "client_name": self._client_name(str(inv.client)),
                "period": str(inv.period_key),
                "status": history_status(
                    str(inv.state),
                    approval is not None,
                    decisions[-1] if decisions and not lines else None,
                ),
                "number": inv.number,
                "stripe_invoice_id": inv.stripe_invoice_id,
                "stripe_url": stripe_dashboard_url(self.settings, inv.stripe_invoice_id),
                "total": str(total),
                "currency": str(inv.currency),
                "approved_by": approval.approver if approval is not None else None,
                "approved_at": self._when(approval.decided_at)["at_local"]
                if approval is not None
                else None,
                "rejected_by": rejection["actor"] if rejection else None,
                "rejected_reason": rejection["reason"] if rejection else None,
                "events": timeline,
            }
            if matches(row, query):
                result.append(row)
        return result

    @staticmethod
    def _open_total(conn: Connection, invoice_id: int, currency: str) -> tuple[Decimal, int]:
        amounts = [
            Money(r.amount or Decimal(0), currency).quantized().amount
            for r in q.draft_lines(conn, invoice_id)
            if r.state in OPEN_STATES
        ]
        return Money(sum(amounts, Decimal(0)), currency).quantized().amount, len(amounts)


def _adjustment(change: dict[str, Any]) -> LineAdjustment:
    """One dashboard change as the Adjust modal's `LineAdjustment`."""
    try:
        entry_id = int(change["entry_id"])
    except (KeyError, TypeError, ValueError):
        raise InvalidChange("each change needs an entry_id") from None
    hours = change.get("hours")
    parsed: Decimal | None = None
    if hours is not None and str(hours).strip() != "":
        try:
            parsed = Decimal(str(hours).strip())
        except InvalidOperation:
            raise InvalidChange(
                f"line {entry_id}: hours {str(hours)[:20]!r} is not a number"
            ) from None
        if not parsed.is_finite() or parsed < 0:
            raise InvalidChange(f"line {entry_id}: hours must be 0 or more")
    description = change.get("description")
    if description is not None:
        description = str(description).strip()
        if not description:
            raise InvalidChange(f"line {entry_id}: a description cannot be empty")
        if len(description) > MAX_DESCRIPTION or "\x00" in description:
            raise InvalidChange(
                f"line {entry_id}: a description is at most {MAX_DESCRIPTION} characters"
            )
    return LineAdjustment(
        entry_id=entry_id,
        hours=parsed,
        rate=None,
        description=description,
        exclude=bool(change.get("write_off")),
    )
