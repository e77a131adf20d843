""""Draft all due": one action that drafts every client with ready work and asks
finance to approve each draft (issue #19, item 2).

The same operation behind `kanvoice invoice --all`, the dashboard's *Draft all due*
button and the Slack button ``draft_all``. It is a loop over the configured clients
of the two ledger operations those entrypoints already use one client at a time:

1. `Invoicing.create_or_refresh_draft`: every ready entry goes on the client's open
   draft, once (the open draft row is held while its lines are chosen; the draft
   itself is unique per client and period);
2. `ApprovalDesk.request_approval`: one Slack post per (invoice, version) in the
   outbox, under a unique idempotency key.

Exactly once, without in-process locks: both steps are idempotent in the ledger, so
a double click, two instances or the CLI racing the dashboard add each entry to one
draft and queue one approval post per draft version. A second "draft all" with
nothing new drafts nothing, bumps no version and posts nothing. The Stripe and Slack
calls themselves are made by the outbox drains (each call with its own key).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from sqlalchemy.exc import IntegrityError

from mapping.money import Money
from sync.invoicing import Invoicing, InvoicingError

log = structlog.get_logger(__name__)

Outcome = Literal["drafted", "unchanged", "skipped", "failed"]
#: `request_approval(invoice_id, actor) -> queued?` (`ApprovalDesk.request_approval`).
RequestApproval = Callable[[int, str], bool]


@dataclass(frozen=True, slots=True)
class ClientDraft:
    """What "draft all" did for one client.

    - ``drafted``: new ready lines went on the draft (`added` of them);
    - ``unchanged``: the client's open draft already held every ready line (another
      click, or the scheduler, got there first); nothing was added;
    - ``skipped``: nothing ready to bill and no draft with lines: no draft created;
    - ``failed``: drafting was refused (`message` says why); other clients go on.

    `approval_requested`: an approval post for the draft's current version was queued
    by this call (False when one was already queued, for a draft with no lines, or
    without Slack).
    """

    client: str
    outcome: Outcome
    period: str = ""
    invoice_id: int | None = None
    added: int = 0
    lines: int = 0
    total: Money | None = None
    left: int = 0
    approval_requested: bool = False
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "outcome": self.outcome,
            "period": self.period,
            "invoice_id": self.invoice_id,
            "added": self.added,
            "lines": self.lines,
            "total": str(self.total.amount) if self.total is not None else None,
            "currency": self.total.currency if self.total is not None else None,
            "left": self.left,
            "approval_requested": self.approval_requested,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class DraftAllReport:
    """Per client, in settings order, what one "draft all" did."""

    clients: tuple[ClientDraft, ...]

    def keys(self, outcome: Outcome) -> list[str]:
        return [c.client for c in self.clients if c.outcome == outcome]

    @property
    def drafted(self) -> list[str]:
        return self.keys("drafted")

    @property
    def unchanged(self) -> list[str]:
        return self.keys("unchanged")

    @property
    def skipped(self) -> list[str]:
        return self.keys("skipped")

    @property
    def failed(self) -> list[str]:
        return self.keys("failed")

    @property
    def approvals_requested(self) -> int:
        return sum(1 for c in self.clients if c.approval_requested)

    def summary(self) -> str:
        """One line for people: counts, with the clients named."""

        def part(label: str, keys: list[str]) -> str:
            return f"{len(keys)} {label}" + (f" ({', '.join(keys)})" if keys else "")

        asked = self.approvals_requested
        return (
            f"{part('drafted', self.drafted)}, {part('unchanged', self.unchanged)}, "
            f"{part('skipped', self.skipped)}, {part('failed', self.failed)}; "
            f"{asked} approval request{'' if asked == 1 else 's'} queued"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": [c.to_json() for c in self.clients],
            "drafted": self.drafted,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "failed": self.failed,
            "approvals_requested": self.approvals_requested,
            "message": f"Draft all due: {self.summary()}",
        }


def draft_all(
    invoicing: Invoicing, request_approval: RequestApproval | None, actor: str
) -> DraftAllReport:
    """Draft every configured client with ready work, then queue the approval request
    of each draft with lines (see the module docstring for why this is exactly once).

    A client whose drafting is refused is reported ``failed`` and the others go on; a
    ledger that cannot be reached raises (SQLAlchemy errors), as for one client.
    """
    results = []
    for client in invoicing.settings.clients:
        results.append(_one(invoicing, request_approval, client.key, actor))
    report = DraftAllReport(tuple(results))
    log.info(
        "draft_all.done",
        actor=actor,
        drafted=report.drafted,
        unchanged=report.unchanged,
        skipped=report.skipped,
        failed=report.failed,
        approvals_requested=report.approvals_requested,
    )
    return report


def _one(
    invoicing: Invoicing, request_approval: RequestApproval | None, key: str, actor: str
) -> ClientDraft:
    try:
        result = invoicing.create_or_refresh_draft(key, actor=actor)
    except (InvoicingError, IntegrityError) as exc:
        log.warning("draft_all.client_failed", client=key, error=str(exc))
        return ClientDraft(key, "failed", message=str(exc))
    if result.invoice_id is None or not result.lines:
        return ClientDraft(
            key,
            "skipped",
            result.period,
            result.invoice_id,
            message=f"nothing to bill for {key} ({result.period}): no ready lines",
        )
    requested = False
    if request_approval is not None:
        try:
            requested = request_approval(result.invoice_id, actor)
        except IntegrityError:
            # Another click queued the same post (same key) at the same moment.
            requested = False
    outcome: Outcome = "drafted" if result.added else "unchanged"
    message = (
        f"draft {result.invoice_id}: {result.added} lines added, {result.lines} in all, "
        f"total {result.total}"
        if result.added
        else f"draft {result.invoice_id} already holds every ready line ({result.lines})"
    )
    return ClientDraft(
        key,
        outcome,
        result.period,
        result.invoice_id,
        result.added,
        result.lines,
        result.total,
        result.left,
        requested,
        message,
    )
