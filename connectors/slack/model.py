"""The Slack side of an approval, as plain values: no I/O, no clock, money as `Decimal`.

`DraftSummary` is what the ledger hands the Slack connector to render; `Decision` is
what a verified Slack interaction (button click or modal submit) is reduced to.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

LineKind = Literal["time", "milestone", "adjustment"]
DecisionKind = Literal[
    "approve", "approve_force", "reject", "adjust_open", "adjust_submit", "draft_all"
]
Outcome = Literal["approved", "rejected", "adjusted"]


@dataclass(frozen=True, slots=True)
class DraftLine:
    """One line of a Stripe draft as finance sees it.

    `kind` is ``"time"`` (hours x rate), ``"milestone"`` (fixed price; `rate` is
    None and `hours` are kept for cost only) or ``"adjustment"``.
    """

    entry_id: int
    title: str
    url: str
    hours: Decimal
    rate: Decimal | None
    amount: Decimal
    kind: str  # "time" | "milestone" | "adjustment"
    description: str
    # What finance should see before approving (e.g. "over budget (client:acme)").
    flags: tuple[str, ...] = ()
    #: Who did the work (a per-person entry, issue 18): the person's name and role
    #: as finance reads them; None for an entry of the whole item.
    person: str | None = None
    role: str | None = None


@dataclass(frozen=True, slots=True)
class DraftSummary:
    """A client's draft invoice for one period, ready to be approved.

    `version` changes whenever the draft changes; the Approve / Adjust / Reject
    buttons carry it so that a click on a stale message cannot approve a draft
    that has changed since it was posted.
    """

    invoice_id: int
    client_key: str
    client_name: str
    period_label: str
    currency: str
    lines: tuple[DraftLine, ...]
    total: Decimal
    stripe_url: str | None
    version: int
    # Draft-wide warnings shown above the lines (e.g. "over budget: client:acme: …").
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LineAdjustment:
    """Finance's change to one line from the Adjust modal; None means "keep as is"."""

    entry_id: int
    hours: Decimal | None
    rate: Decimal | None
    description: str | None
    exclude: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """A verified interaction from Slack, reduced to what the approval rules need.

    - ``approve``: the Approve button (after its confirm dialog).
    - ``reject``: the Reject button (``reason`` None) or the reject-reason modal
      (``reason`` set, never blank). See `connectors.slack` for the two-step flow.
    - ``adjust_open``: the Adjust button; open the modal with ``trigger_id`` (valid 3 s).
    - ``adjust_submit``: the Adjust modal was submitted; ``adjustments`` holds the
      lines that changed.
    - ``draft_all``: the *Draft all due* button (action ``draft_all``, value ``"all"``):
      draft every client with ready work and ask approval for each draft. It names no
      invoice: ``invoice_id`` and ``version`` are 0.

    ``channel_id`` / ``message_ts`` locate the approval message (for modals they are
    carried through the view's private_metadata). Authorization is not decided here.
    """

    kind: DecisionKind
    invoice_id: int
    version: int
    user_id: str
    user_name: str
    team_id: str | None
    channel_id: str | None
    message_ts: str | None
    response_url: str | None
    trigger_id: str | None
    reason: str | None
    adjustments: tuple[LineAdjustment, ...]

    @property
    def needs_reason(self) -> bool:
        """True for a Reject button click: ask for a reason (or reject without one)."""
        return self.kind == "reject" and self.reason is None
