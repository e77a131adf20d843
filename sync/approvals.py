"""Slack approvals on top of the ledger: post drafts, take decisions, follow adjustments.

`ApprovalDesk` is the one place where a Slack interaction (HTTP or Socket Mode) meets
the ledger. Work is split in two phases so that Slack always gets its answer within
3 s:

1. `decide(decision)`: authorization, then the ledger change, through `Invoicing` for
   approve / reject (the same rules and audit rows as the CLI and the dashboard) and
   in one ledger transaction for adjustments. Stripe work is only ever queued in the
   outbox. Returns a `Reply`: the body to answer Slack with (modal errors, or None)
   and what to do afterwards.
2. `follow_up(reply)`: the Slack side (ephemeral notices, modals, message updates).
   The HTTP route runs it as a FastAPI background task; `handle_payload` (Socket
   Mode) as an asyncio task after the ack.

Every Slack *write that matters* (posting a draft, marking a message decided) is an
outbox operation (``slack_post_draft``, ``slack_update_decided``) drained by
`drain_slack`: Slack down or rate-limited leaves the row pending with a backoff; it
never blocks ingest or the Stripe drain (which skips these operations), and a draft
is never finalized without an approval row whatever Slack does.

Decisions, as chosen here:

- Not an approver (neither in ``slack.approvers`` nor a member of
  ``slack.approver_group``; a group that cannot be read refuses): ephemeral
  `refusal_text`, nothing changed, an ``approve_refused`` / ``reject_refused`` /
  ``adjust_refused`` audit row.
- Approve: ``invoicing.approve(invoice, user, "slack", version)``; the message is
  updated to show who decided and when. Already decided or stale (the draft changed
  since the message) → ephemeral explanation, message unchanged.
- Reject: the button opens a reason modal (a reason is always recorded); its submit
  calls ``invoicing.reject``: entries back to ready, the draft stays unfinalized.
- Adjust: the button opens the Adjust modal; its submit edits drafted entries of the
  invoice (see `ApprovalDesk._adjust`), bumps the version and re-posts the draft for
  approval. Hours may only be lowered here (raising them is the board's job).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from connectors.base import FatalError
from connectors.slack import (
    Decision,
    DraftLine,
    DraftSummary,
    LineAdjustment,
    Outcome,
    RetryPolicy,
    SlackCallFailed,
    SlackInputInvalid,
    SlackUnavailable,
    already_decided_text,
    decision_from_payload,
    refusal_text,
    stale_text,
)
from connectors.slack.messages import line_block_id, mention
from connectors.slack.port import SlackPort
from mapping.domain import EntryState, Staff
from mapping.invoices import LineChange, Refusal, Refused, decide_adjust, draft_refusal
from mapping.money import Money
from sync.budgets import draft_budget
from sync.draft_all import DraftAllReport, draft_all
from sync.engine import Clock
from sync.invoicing import (
    BelowMinimumCharge,
    Invoicing,
    InvoicingError,
    NotAnApprover,
    billing_period,
    dead_drainer,
    drainer_owner,
)
from sync.ledger import invoices as q
from sync.ledger.drafts import draft_view, record_write_off, time_seqs
from sync.ledger.ops import (
    audit,
    enqueue,
    invoice_row,
    ledger_id,
    move_entry,
    queue_draft_edits,
)
from sync.ledger.outbox import Operation, OutboxOp, OutboxStatus, ops_for
from sync.ledger.records import InvoiceRecord
from sync.ledger.store import Ledger
from sync.outbox import BackoffPolicy, Done, Drainer, HandlerRegistry, Park, Retry
from sync.outbox import Outcome as OutboxOutcome
from sync.settings import Settings, stripe_dashboard_url

log = structlog.get_logger(__name__)

CHANNEL = "slack"
OP_POST = "slack_post_draft"
OP_DECIDED = "slack_update_decided"
OP_BUDGET_ALERT = "slack_budget_alert"
SLACK_OPERATIONS = (OP_POST, OP_DECIDED, OP_BUDGET_ALERT)
# A claimed Slack operation is retried after this long if its instance died mid-call.
# A claimed Slack row is another drain's after this long: longer than a Slack call
# with its retries (`DESK_RETRY`'s deadline).
CLAIM_LEASE = timedelta(minutes=2)
MAX_BACKOFF_SECONDS = 600.0
SLACK_BACKOFF = BackoffPolicy(floor=1.0, cap=MAX_BACKOFF_SECONDS)
# The authorization check must leave time to answer Slack within 3 s.
GROUP_CHECK_SECONDS = 1.5
# Slack calls from the desk: short, because the outbox retries later anyway.
DESK_RETRY = RetryPolicy(
    max_retries=2, backoff=0.5, max_backoff=4.0, max_retry_after=5.0, timeout=10.0, deadline=20.0
)
# States of the lines a draft message shows (approved / invoiced once decided).
SHOWN_STATES = (
    EntryState.DRAFTED.value,
    EntryState.APPROVED.value,
    EntryState.INVOICED.value,
    EntryState.PAID.value,
)
_LINE_KINDS = ("time", "milestone", "adjustment")
_MISSING_MESSAGE = frozenset({"message_not_found", "cant_update_message", "channel_not_found"})
_REFUSED_ACTION = {
    "approve": "approve_refused",
    "approve_force": "approve_refused",
    "reject": "reject_refused",
    "adjust_open": "adjust_refused",
    "adjust_submit": "adjust_refused",
    "draft_all": "draft_all_refused",
}

SlackFactory = Callable[[], SlackPort]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------
# DraftSummary <-> JSON (outbox payloads outlive the lines: a rejected draft is empty)
# --------------------------------------------------------------------------------------


def summary_to_json(summary: DraftSummary) -> dict[str, Any]:
    return {
        "invoice_id": summary.invoice_id,
        "client_key": summary.client_key,
        "client_name": summary.client_name,
        "period_label": summary.period_label,
        "currency": summary.currency,
        "total": str(summary.total),
        "stripe_url": summary.stripe_url,
        "version": summary.version,
        "lines": [
            {
                "entry_id": line.entry_id,
                "title": line.title,
                "url": line.url,
                "hours": str(line.hours),
                "rate": None if line.rate is None else str(line.rate),
                "amount": str(line.amount),
                "kind": line.kind,
                "description": line.description,
                "flags": list(line.flags),
                "person": line.person,
                "role": line.role,
            }
            for line in summary.lines
        ],
        "flags": list(summary.flags),
    }


def summary_from_json(data: dict[str, Any]) -> DraftSummary:
    return DraftSummary(
        invoice_id=int(data["invoice_id"]),
        client_key=str(data["client_key"]),
        client_name=str(data["client_name"]),
        period_label=str(data["period_label"]),
        currency=str(data["currency"]),
        lines=tuple(
            DraftLine(
                entry_id=int(line["entry_id"]),
                title=str(line["title"]),
                url=str(line["url"]),
                hours=Decimal(line["hours"]),
                rate=None if line["rate"] is None else Decimal(line["rate"]),
                amount=Decimal(line["amount"]),
                kind=str(line["kind"]),
                description=str(line["description"]),
                flags=tuple(line.get("flags") or ()),
                person=line.get("person"),
                role=line.get("role"),
            )
            for line in data["lines"]
        ),
        total=Decimal(data["total"]),
        stripe_url=data.get("stripe_url"),
        version=int(data["version"]),
        flags=tuple(data.get("flags") or ()),
    )


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What `ApprovalDesk.decide` did, and what is left for `follow_up`.

    `body` is the JSON to answer the interaction with (None: an empty 200, which also
    closes a submitted modal). `notice` is an ephemeral text for the user who clicked;
    `modal` a modal to open with the click's trigger id; `drain` asks for the queued
    Slack operations to be performed.
    """

    outcome: str
    decision: Decision
    body: dict[str, Any] | None = None
    notice: str | None = None
    modal: Literal["adjust", "reject"] | None = None
    summary: DraftSummary | None = None
    drain: bool = False

    @property
    def has_follow_up(self) -> bool:
        return bool(self.notice or self.modal or self.drain)


@dataclass
class SlackDrainReport:
    done: int = 0
    cancelled: int = 0
    retried: int = 0
    parked: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _PostPlan:
    action: Literal["cancel", "post", "retire"]
    reason: str = ""
    summary: DraftSummary | None = None
    channel: str | None = None
    old_channel: str | None = None
    old_ts: str | None = None
    actor: str = "kanvoice"
    previous: DraftSummary | None = None


class _Invalid(Exception):
    """Adjust modal values that cannot be applied: answer with field errors."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


class _NotApplicable(Exception):
    """The draft cannot take this decision (decided, stale, gone): tell the user."""


# --------------------------------------------------------------------------------------
# The desk
# --------------------------------------------------------------------------------------


class ApprovalDesk:
    """Slack approvals on one ledger (with its invoicing, settings and clock).

    `slack_factory` builds the `SlackPort` (the real client from settings, or the
    in-memory Slack of the demo; the composition root decides); None means Slack is
    not configured: decisions still reach the ledger, nothing is posted.
    """

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        invoicing: Invoicing,
        clock: Clock,
        slack_factory: SlackFactory | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.invoicing = invoicing
        self.clock = clock
        self.slack_factory = slack_factory
        self._slack: SlackPort | None = None
        self._slack_drainer: Drainer | None = None
        self._group_members: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        if self.settings.slack.approver_group:
            self._share_group_approvers()

    def with_slack(self, slack_factory: SlackFactory | None) -> ApprovalDesk:
        """A new desk on the same ledger that reaches Slack through `slack_factory`."""
        return ApprovalDesk(self.settings, self.ledger, self.invoicing, self.clock, slack_factory)

    @property
    def slack(self) -> SlackPort | None:
        if self._slack is None and self.slack_factory is not None:
            self._slack = self.slack_factory()
        return self._slack

    # ---- reading the ledger -------------------------------------------------------------

    def summary(self, invoice_id: int) -> DraftSummary:
        """The draft as finance sees it (LookupError when there is no such invoice)."""
        with self.ledger.engine.connect() as conn:
            return self._summary(conn, invoice_row(conn, invoice_id))

    def _period_label(self, invoice: InvoiceRecord) -> str:
        try:
            client = self.settings.client(invoice.client)
        except KeyError:
            return str(invoice.period_key)
        if invoice.period_start is None:
            return str(invoice.period_key)
        period = billing_period(client, _utc(invoice.period_start))
        return period.label if period.key == invoice.period_key else str(invoice.period_key)

    @staticmethod
    def _who(staff: Staff, person: str | None, role: str | None) -> tuple[str | None, str | None]:
        """The person (configured name, else the board identity) and role label of a
        per-person entry, for the Slack line; nothing for an entry of the whole item."""
        if person is None:
            return None, None
        configured = staff.person(person)
        role_def = staff.role(role)
        return (
            configured.label if configured is not None else person,
            role_def.label if role_def is not None else role,
        )

    def _summary(self, conn: Connection, invoice: InvoiceRecord) -> DraftSummary:
        rows = q.summary_lines(conn, invoice.id, SHOWN_STATES)
        # Over budget (issue 19): flagged so finance sees it before approving.
        budget = draft_budget(conn, self.settings, invoice)
        staff = self.settings.staff()
        lines = tuple(
            DraftLine(
                entry_id=r.id,
                title=r.title,
                url=str(r.url or ""),
                hours=r.hours if r.hours is not None else Decimal(0),
                rate=r.rate if r.kind == "time" else None,
                amount=Money(r.amount or Decimal(0), invoice.currency).quantized().amount,
                kind=r.kind if r.kind in _LINE_KINDS else "time",
                description=str(r.description or ""),
                flags=budget.lines.get(r.id, ()),
                person=who[0],
                role=who[1],
            )
            for r in rows
            for who in (self._who(staff, r.person, r.role),)
        )
        try:
            name = self.settings.client(invoice.client).name or invoice.client
        except KeyError:
            name = invoice.client
        return DraftSummary(
            invoice_id=int(invoice.id),
            client_key=str(invoice.client),
            client_name=str(name),
            period_label=self._period_label(invoice),
            currency=str(invoice.currency),
            lines=lines,
            total=sum((line.amount for line in lines), Decimal(0)),
            stripe_url=stripe_dashboard_url(self.settings, invoice.stripe_invoice_id),
            version=int(invoice.version),
            flags=budget.flags,
        )

    # ---- asking for approval -----------------------------------------------------------

    @property
    def can_post(self) -> bool:
        return self.slack_factory is not None and bool(self.settings.slack.channel)

    def request_approval(self, invoice_id: int, actor: str = "kanvoice") -> bool:
        """Queue the Slack message asking finance to approve the draft's current version.

        One message per (invoice, version): asking again for an unchanged draft does
        nothing. A message still waiting for the previous version is marked "adjusted"
        when the new one is posted. Returns whether a post was queued (False without
        Slack settings, for a decided invoice, or when already queued).
        """
        if not self.can_post:
            log.info("slack.approval_not_requested", invoice=invoice_id, reason="no slack")
            return False
        now = self.clock()
        with self.ledger.engine.begin() as conn:
            invoice = invoice_row(conn, invoice_id)
            if invoice.state != "draft":
                return False
            lines = q.count_entries(conn, invoice.id, SHOWN_STATES)
            if not lines:
                # An empty draft is nothing to approve: finance is not asked about it.
                log.info("slack.approval_not_requested", invoice=invoice_id, reason="no lines")
                return False
            return self._queue_post(conn, invoice, now, actor, replace=True)

    def _queue_post(
        self,
        conn: Connection,
        invoice: InvoiceRecord,
        now: datetime,
        actor: str,
        *,
        replace: bool,
        message: tuple[str | None, str | None] = (None, None),
        previous: DraftSummary | None = None,
    ) -> bool:
        version = int(invoice.version)
        payload: dict[str, Any] = {"version": version, "actor": actor, "replace": replace}
        if message[0] and message[1]:
            payload["channel"], payload["ts"] = message
        if previous is not None:
            payload["previous"] = summary_to_json(previous)
        return enqueue(
            conn,
            OP_POST,
            f"kv-{ledger_id(conn)}-inv{invoice.id}-v{version}-slack-post",
            now,
            invoice_id=int(invoice.id),
            payload=payload,
        )

    async def post_for_approval(self, invoice_id: int, actor: str = "kanvoice") -> None:
        """`request_approval` then `drain_slack` (the daemon's "draft is due" hook)."""
        await asyncio.to_thread(self.request_approval, invoice_id, actor)
        await self.drain_slack()

    def _queue_decided(
        self,
        conn: Connection,
        summary: DraftSummary,
        outcome: Outcome,
        user: str,
        at: datetime,
        message: tuple[str | None, str | None],
        reason: str | None = None,
    ) -> None:
        channel, ts = message
        if not channel or not ts or not self.can_post:
            return
        enqueue(
            conn,
            OP_DECIDED,
            f"kv-{ledger_id(conn)}-inv{summary.invoice_id}-slack-{outcome}-v{summary.version}-{ts}",
            at,
            invoice_id=summary.invoice_id,
            payload={
                "channel": channel,
                "ts": ts,
                "outcome": outcome,
                "user": user,
                "at": at.isoformat(),
                "reason": reason,
                "summary": summary_to_json(summary),
            },
        )

    def announce_decision(
        self, summary: DraftSummary, outcome: Outcome, actor: str, reason: str | None = None
    ) -> bool:
        """A decision taken elsewhere (CLI, dashboard): mark the draft's Slack message.

        `summary` is the draft as decided (for a rejection, read it before rejecting:
        the lines leave the draft). Returns whether a message update was queued.
        """
        now = self.clock()
        with self.ledger.engine.begin() as conn:
            invoice = invoice_row(conn, summary.invoice_id)
            message = (invoice.slack_channel, invoice.slack_ts)
            if not message[0] or not message[1] or not self.can_post:
                return False
            if outcome == "rejected":
                self._forget_message(conn, int(invoice.id))
            self._queue_decided(conn, summary, outcome, actor, now, message, reason)
        return True

    @staticmethod
    def _forget_message(conn: Connection, invoice_id: int) -> None:
        """The rejected message is done with: the next draft gets a message of its own."""
        q.set_slack_message(conn, invoice_id, None, None)

    # ---- the Slack outbox --------------------------------------------------------------

    async def drain_slack(self) -> SlackDrainReport:
        """Perform every due Slack operation of the outbox (posts and message updates).

        Through the one outbox mechanism (`sync.outbox.Drainer`): each row is claimed
        with a lease first, so two instances never post the same message. Slack
        unavailable or rate-limited: retried after a backoff (Slack's ``Retry-After``
        when given). Slack refusing the call for good (``channel_not_found``…): the row
        is parked and audited. A token Slack refuses (``invalid_auth``…) would fail
        every row alike: the drain stops, the rows stay pending, the error is reported.
        """
        report = SlackDrainReport()
        if self.slack is None:
            return report
        outcome = await self._drainer().drain()
        report.done, report.cancelled = outcome.done, outcome.cancelled
        report.retried, report.parked = outcome.retried, outcome.parked
        report.errors = list(outcome.errors)
        return report

    def _drainer(self) -> Drainer:
        if self._slack_drainer is None:
            registry = HandlerRegistry()
            registry.register(Operation.SLACK_POST_DRAFT, self._slack_call)
            registry.register(Operation.SLACK_UPDATE_DECIDED, self._slack_call)
            registry.register(Operation.SLACK_BUDGET_ALERT, self._slack_call)
            registry.register(Operation.SLACK_POST_DIGEST, self._slack_call)
            self._slack_drainer = Drainer(
                self.ledger,
                registry,
                self.clock,
                policy=SLACK_BACKOFF,
                lease=CLAIM_LEASE,
                owner=drainer_owner(),
                gone=dead_drainer,
            )
        return self._slack_drainer

    async def _slack_call(self, op: OutboxOp) -> OutboxOutcome:
        """One Slack operation as an outcome; a post's message is recorded on its
        invoice in the transaction that closes the row."""
        slack = self.slack
        assert slack is not None
        try:
            if op.operation is Operation.SLACK_POST_DRAFT:
                status, result = await self._perform_post(slack, op)
            elif op.operation is Operation.SLACK_BUDGET_ALERT:
                status, result = await self._perform_alert(slack, op)
            elif op.operation is Operation.SLACK_POST_DIGEST:
                from sync.finance import perform_digest

                status, result = await perform_digest(
                    slack, self.ledger, self.settings, self.clock, op
                )
            else:
                status, result = await self._perform_decided(slack, op)
        except SlackUnavailable as exc:
            return Retry(str(exc), exc.retry_after)
        except SlackCallFailed as exc:
            if exc.is_auth_error:
                raise  # the token: every row would fail alike
            return Park(str(exc))
        except FatalError as exc:  # e.g. no channel to post to
            return Park(str(exc))
        if status != "done":
            return Done(result, cancelled=True)
        if op.operation is not Operation.SLACK_POST_DRAFT:
            return Done(result)
        invoice_id = op.invoice_id

        def record(conn: Connection) -> None:
            if invoice_id is not None:  # a post is always of an invoice
                q.set_slack_message(conn, invoice_id, result["channel"], result["ts"])

        return Done(result, record)

    def _plan_post(self, op: OutboxOp) -> _PostPlan:
        payload = dict(op.payload or {})
        actor = str(payload.get("actor") or "kanvoice")
        previous = summary_from_json(payload["previous"]) if payload.get("previous") else None
        with self.ledger.engine.connect() as conn:
            invoice = q.find_invoice(conn, op.invoice_id) if op.invoice_id is not None else None
            if invoice is None:
                return _PostPlan("cancel", "no such invoice")
            approved = q.approval_of(conn, invoice.id)
            if invoice.state != "draft" or approved:
                return _PostPlan("cancel", f"invoice is {invoice.state}, already decided")
            summary = self._summary(conn, invoice)
            posted = ops_for(
                conn,
                invoice_id=invoice.id,
                operations={Operation.SLACK_POST_DRAFT},
                statuses={OutboxStatus.DONE},
            )
        old_channel, old_ts = payload.get("channel"), payload.get("ts")
        if not old_ts and payload.get("replace") and invoice.slack_ts:
            old_channel, old_ts = invoice.slack_channel, invoice.slack_ts
        if any(
            (r.result or {}).get("version") == summary.version
            and (r.result or {}).get("ts") == invoice.slack_ts
            for r in posted
        ):
            return _PostPlan("cancel", f"version {summary.version} is already posted")
        if not summary.lines:
            if old_ts:
                return _PostPlan(
                    "retire",
                    "nothing left to approve",
                    summary,
                    old_channel=old_channel,
                    old_ts=old_ts,
                    actor=actor,
                    previous=previous,
                )
            return _PostPlan("cancel", "nothing to approve")
        return _PostPlan(
            "post", "", summary, self.settings.slack.channel, old_channel, old_ts, actor, previous
        )

    async def _perform_post(self, slack: SlackPort, op: OutboxOp) -> tuple[str, dict[str, Any]]:
        plan = await asyncio.to_thread(self._plan_post, op)
        if plan.action == "cancel" or plan.summary is None:
            return "cancelled", {"reason": plan.reason}
        now = self.clock()
        summary = plan.summary
        if plan.action == "retire":
            assert plan.old_channel and plan.old_ts
            try:
                old = plan.previous or summary
                await slack.update_decided(
                    plan.old_channel, plan.old_ts, old, "adjusted", plan.actor, now
                )
            except SlackCallFailed as exc:
                if exc.error not in _MISSING_MESSAGE:
                    raise
            return "cancelled", {"reason": plan.reason}
        if not plan.channel:
            raise FatalError("slack.channel is not set: nowhere to post the draft")
        if plan.old_channel and plan.old_ts:
            try:
                channel, ts = await slack.repost_draft(
                    plan.old_channel, plan.old_ts, summary, plan.actor, now, plan.previous
                )
            except SlackCallFailed as exc:
                if exc.error not in _MISSING_MESSAGE:
                    raise
                channel, ts = await slack.post_draft(plan.channel, summary)
        else:
            channel, ts = await slack.post_draft(plan.channel, summary)
        log.info("slack.draft_posted", invoice=summary.invoice_id, version=summary.version, ts=ts)
        return "done", {"version": summary.version, "channel": channel, "ts": ts}

    async def _perform_alert(self, slack: SlackPort, op: OutboxOp) -> tuple[str, dict[str, Any]]:
        """A budget alert (`sync.budgets.queue_budget_alerts` queued it once per scope,
        period and threshold): posted to `slack.channel`."""
        payload = dict(op.payload or {})
        channel = self.settings.slack.channel
        if not channel:
            raise FatalError("slack.channel is not set: nowhere to post the budget alert")
        client = str(payload.get("client") or "")
        try:
            name = self.settings.client(client).name or client
        except KeyError:
            name = client
        posted_channel, ts = await slack.post_alert(
            channel, str(payload["text"]), bool(payload.get("over")), name
        )
        log.info("slack.budget_alert_posted", scope=payload.get("scope"), ts=ts)
        return "done", {"channel": posted_channel, "ts": ts}

    async def _perform_decided(self, slack: SlackPort, op: OutboxOp) -> tuple[str, dict[str, Any]]:
        payload = dict(op.payload or {})
        outcome: Outcome = payload["outcome"]
        try:
            await slack.update_decided(
                str(payload["channel"]),
                str(payload["ts"]),
                summary_from_json(payload["summary"]),
                outcome,
                str(payload["user"]),
                datetime.fromisoformat(str(payload["at"])),
                payload.get("reason"),
            )
        except SlackCallFailed as exc:
            if exc.error not in _MISSING_MESSAGE:
                raise
            return "cancelled", {"reason": exc.error}
        return "done", {"outcome": outcome}

    # ---- authorization -----------------------------------------------------------------

    def _share_group_approvers(self) -> None:
        """Members of the approver group that Slack confirmed count as approvers for
        `Invoicing` too (CLI and dashboard decisions use the same check)."""
        self.invoicing.verified_approvers = self._group_members

    async def is_approver(self, user_id: str) -> tuple[bool, str | None]:
        """(allowed, problem): listed in ``slack.approvers`` or in ``slack.approver_group``.

        A group that cannot be read in time refuses, with the problem named.
        """
        settings = self.settings.slack
        if user_id in settings.approvers:
            return True, None
        group = settings.approver_group
        slack = self.slack
        if not group or slack is None:
            return False, None
        try:
            async with asyncio.timeout(GROUP_CHECK_SECONDS):
                member = await slack.is_approver(user_id, settings.approvers, group)
        except (TimeoutError, SlackUnavailable, SlackCallFailed) as exc:
            log.warning("slack.group_check_failed", user=user_id, error=str(exc))
            return False, f"the approver group could not be read ({str(exc) or 'timeout'})"
        if member:
            self._group_members.add(user_id)
        else:
            self._group_members.discard(user_id)
        return member, None

    def _audit_refusal(self, decision: Decision, problem: str | None) -> None:
        detail: dict[str, Any] = {
            "channel": CHANNEL,
            "kind": decision.kind,
            "version": decision.version,
            "user_name": decision.user_name,
            "team_id": decision.team_id,
        }
        if problem:
            detail["problem"] = problem
        with self.ledger.engine.begin() as conn:
            audit(
                conn,
                self.clock(),
                decision.user_id,
                _REFUSED_ACTION[decision.kind],
                "drafts:all" if decision.kind == "draft_all" else f"invoice:{decision.invoice_id}",
                **detail,
            )
        log.warning(
            "slack.refused", user=decision.user_id, kind=decision.kind, invoice=decision.invoice_id
        )

    # ---- decisions ---------------------------------------------------------------------

    async def handle(self, decision: Decision) -> dict[str, Any] | None:
        """Decide, then do the Slack side at once; returns the body to answer with."""
        reply = await self.decide(decision)
        await self.follow_up(reply)
        return reply.body

    async def handle_payload(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The Socket Mode handler (`run_socket_mode(app_token, desk.handle_payload)`).

        Same decisions as the HTTP route; the Slack side runs after the ack.
        """
        try:
            decision = decision_from_payload(payload)
        except SlackInputInvalid as exc:
            return exc.response_body()
        if decision is None:
            return None
        reply = await self.decide(decision)
        if reply.has_follow_up:
            task = asyncio.create_task(self.follow_up(reply))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return reply.body

    async def decide(self, decision: Decision) -> Reply:
        """Authorization, then the ledger side of `decision` (fast: no Slack call).

        Raises only when the ledger itself fails (SQLAlchemy errors: answer 503).
        """
        allowed, problem = await self.is_approver(decision.user_id)
        if not allowed:
            await asyncio.to_thread(self._audit_refusal, decision, problem)
            notice = refusal_text(decision.user_id)
            if problem:
                notice = (
                    "Your approver status could not be checked right now "
                    f"({problem}). Nothing was changed; try again in a minute."
                )
            return Reply("refused", decision, notice=notice)
        if decision.kind == "draft_all":
            return await asyncio.to_thread(self._draft_all, decision)
        if decision.kind in ("approve", "approve_force"):
            return await asyncio.to_thread(self._approve, decision)
        if decision.kind == "reject":
            if decision.reason is None:
                return await asyncio.to_thread(self._ask, decision, "reject")
            return await asyncio.to_thread(self._reject, decision)
        if decision.kind == "adjust_open":
            return await asyncio.to_thread(self._ask, decision, "adjust")
        return await asyncio.to_thread(self._adjust, decision)

    async def follow_up(self, reply: Reply) -> None:
        """The Slack side of a decision: modal, ephemeral notice, queued messages.

        Never raises: failures are logged (queued messages stay in the outbox).
        """
        decision = reply.decision
        slack = self.slack
        if slack is None:
            return
        try:
            if reply.modal and reply.summary is not None:
                await self._open_modal(slack, reply)
            if reply.notice:
                await self._tell(slack, decision, reply.notice)
            if reply.drain:
                await self.drain_slack()
        except Exception:
            log.exception("slack.follow_up_failed", invoice=decision.invoice_id, kind=decision.kind)

    async def _open_modal(self, slack: SlackPort, reply: Reply) -> None:
        decision = reply.decision
        assert reply.summary is not None
        if not decision.trigger_id:
            reply.notice = "Slack sent no trigger id with this click; click the button again."
            return
        opener = slack.open_adjust_modal if reply.modal == "adjust" else slack.open_reject_modal
        try:
            await opener(
                decision.trigger_id, reply.summary, decision.channel_id, decision.message_ts
            )
        except (SlackUnavailable, SlackCallFailed) as exc:
            log.warning("slack.modal_not_opened", invoice=decision.invoice_id, error=str(exc))
            reply.notice = (
                "Slack did not open the form in time; nothing was changed. Click the button again."
            )

    async def _tell(self, slack: SlackPort, decision: Decision, text: str) -> None:
        """An ephemeral message to the user who acted (channel, else response_url)."""
        if decision.channel_id:
            try:
                await slack.post_ephemeral(decision.channel_id, decision.user_id, text)
                return
            except (SlackUnavailable, SlackCallFailed) as exc:
                log.warning("slack.ephemeral_failed", user=decision.user_id, error=str(exc))
        if decision.response_url:
            try:
                await slack.respond(decision.response_url, text)
            except (SlackUnavailable, SlackCallFailed) as exc:
                log.warning("slack.respond_failed", user=decision.user_id, error=str(exc))

    def _message_of(
        self, decision: Decision, invoice: InvoiceRecord
    ) -> tuple[str | None, str | None]:
        if decision.channel_id and decision.message_ts:
            return decision.channel_id, decision.message_ts
        return invoice.slack_channel, invoice.slack_ts

    def _explain(self, conn: Connection, invoice_id: int, clicked_version: int) -> str:
        """Why a decision on this draft cannot be taken now (for the ephemeral notice)."""
        invoice = q.find_invoice(conn, invoice_id)
        if invoice is None:
            return f"Invoice draft #{invoice_id} no longer exists. Nothing was changed."
        approval = q.approval_of(conn, invoice_id)
        if approval is not None:
            return already_decided_text(invoice_id, f"approved by {mention(approval.approver)}")
        if invoice.state != "draft":
            return already_decided_text(invoice_id, str(invoice.state))
        summary = self._summary(conn, invoice)
        if not summary.lines:
            last = q.last_decision(conn, invoice_id)
            if last is not None and last.action == "rejected":
                return already_decided_text(invoice_id, f"rejected by {mention(last.actor)}")
        if clicked_version != summary.version:
            return stale_text(summary, clicked_version)
        if not summary.lines:
            return f"Invoice draft #{invoice_id} has no lines: there is nothing to decide."
        return f"Invoice draft #{invoice_id} cannot take this decision now."

    def _open_draft(
        self, conn: Connection, decision: Decision, lock: bool = False
    ) -> InvoiceRecord:
        """The invoice, if it is an undecided draft at the clicked version with lines
        (`mapping.invoices.draft_refusal`); else `_NotApplicable` explaining why."""
        if lock:
            q.lock_invoice(conn, decision.invoice_id)
        if draft_refusal(draft_view(conn, decision.invoice_id), decision.version) is not None:
            raise _NotApplicable(self._explain(conn, decision.invoice_id, decision.version))
        return invoice_row(conn, decision.invoice_id)

    def _ask(self, decision: Decision, modal: Literal["adjust", "reject"]) -> Reply:
        """The Adjust / Reject button: open the modal if the draft can still change."""
        with self.ledger.engine.connect() as conn:
            try:
                invoice = self._open_draft(conn, decision)
            except _NotApplicable as exc:
                return Reply("not_applicable", decision, notice=str(exc))
            summary = self._summary(conn, invoice)
        return Reply("asked", decision, modal=modal, summary=summary)

    def draft_all(self, actor: str) -> DraftAllReport:
        """"Draft all due": every client with ready work drafted, and one approval
        request queued per draft version (`sync.draft_all`). Ledger only: the Stripe
        and Slack calls are left to the outbox drains."""
        return draft_all(self.invoicing, self.request_approval, actor)

    def _draft_all(self, decision: Decision) -> Reply:
        """The Slack *Draft all due* button (the approver check is done): draft, then
        tell the clicker what happened and post the approval requests (the Stripe calls
        are the daemon's outbox drain, as for an approval)."""
        report = self.draft_all(CHANNEL)
        return Reply(
            "drafted_all",
            decision,
            notice=f"Draft all due: {report.summary()}.",
            drain=True,
        )

    def _approve(self, decision: Decision) -> Reply:
        user = decision.user_id
        try:
            result = self.invoicing.approve(
                decision.invoice_id,
                user,
                CHANNEL,
                decision.version,
                force=decision.kind == "approve_force",
            )
        except NotAnApprover:
            return Reply("refused", decision, notice=refusal_text(user))
        except BelowMinimumCharge as exc:
            log.info("slack.approve_below_minimum", invoice=decision.invoice_id)
            notice = f"{exc}. Use *Approve below minimum* on the message to finalize it anyway."
            return Reply("not_applicable", decision, notice=notice)
        except (LookupError, InvoicingError) as exc:
            with self.ledger.engine.connect() as conn:
                notice = self._explain(conn, decision.invoice_id, decision.version)
            log.info("slack.approve_not_applied", invoice=decision.invoice_id, reason=str(exc))
            return Reply("not_applicable", decision, notice=notice)
        at = _utc(datetime.fromisoformat(str(result["decided_at"])))
        with self.ledger.engine.begin() as conn:
            invoice = invoice_row(conn, decision.invoice_id)
            summary = self._summary(conn, invoice)
            self._queue_decided(
                conn, summary, "approved", user, at, self._message_of(decision, invoice)
            )
        log.info("slack.approved", invoice=decision.invoice_id, approver=user)
        return Reply("approved", decision, summary=summary, drain=True)

    def _reject(self, decision: Decision) -> Reply:
        user = decision.user_id
        reason = decision.reason or "-"
        with self.ledger.engine.connect() as conn:
            try:
                invoice = self._open_draft(conn, decision)
            except _NotApplicable as exc:
                return Reply("not_applicable", decision, notice=str(exc))
            before = self._summary(conn, invoice)
        try:
            self.invoicing.reject(decision.invoice_id, user, CHANNEL, reason)
        except NotAnApprover:
            return Reply("refused", decision, notice=refusal_text(user))
        except (LookupError, InvoicingError):
            with self.ledger.engine.connect() as conn:
                notice = self._explain(conn, decision.invoice_id, decision.version)
            return Reply("not_applicable", decision, notice=notice)
        now = self.clock()
        with self.ledger.engine.begin() as conn:
            invoice = invoice_row(conn, decision.invoice_id)
            message = self._message_of(decision, invoice)
            self._forget_message(conn, int(invoice.id))
            self._queue_decided(conn, before, "rejected", user, now, message, reason)
        log.info("slack.rejected", invoice=decision.invoice_id, by=user)
        return Reply("rejected", decision, summary=before, drain=True)

    # ---- adjustments -------------------------------------------------------------------

    def adjust_lines(
        self,
        invoice_id: int,
        who: str,
        version: int,
        adjustments: tuple[LineAdjustment, ...],
        channel: str,
    ) -> Reply:
        """The Adjust modal's rules for another channel (the dashboard): the same
        checks, ledger changes, Stripe edits, audit row and Slack re-post. The caller
        has authenticated `who`; this checks the approver list (refusal audited)."""
        decision = Decision(
            kind="adjust_submit",
            invoice_id=invoice_id,
            version=version,
            user_id=who,
            user_name=who,
            team_id=None,
            channel_id=None,
            message_ts=None,
            response_url=None,
            trigger_id=None,
            reason=None,
            adjustments=adjustments,
        )
        if not self.invoicing.is_approver(who):
            with self.ledger.engine.begin() as conn:
                audit(
                    conn, self.clock(), who, "adjust_refused", f"invoice:{invoice_id}",
                    channel=channel,
                )
            return Reply("refused", decision, notice=f"{who} is not an approver")
        return self._adjust(decision, channel)

    def _adjust(self, decision: Decision, channel: str = CHANNEL) -> Reply:
        """Apply the Adjust modal to the draft's lines, in one ledger transaction.

        For each changed line (drafted entries of this invoice only):

        - exclude: the entry goes to ``voided`` ("excluded by <user>"); its hours stay
          settled, so the board never bills them again; its Stripe line is deleted.
        - hours lowered (time lines): the removed hours become a new ``voided`` entry
          of the same item ("written off by <user>"), so the board never re-bills
          them; the entry keeps the rest, amount = hours x rate in the currency's
          units. Lowered to 0 is the same as excluding. Raising hours is refused.
        - rate or description changed: the entry is updated.

        Changed lines queue their Stripe edits (`queue_draft_edits`, which also bumps
        the version); the draft is then queued for re-posting with the new version.
        """
        for attempt in range(3):
            try:
                return self._adjust_once(decision, channel)
            except IntegrityError:
                # A board sync added an entry to the same item at the same moment.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _adjust_once(self, decision: Decision, channel: str = CHANNEL) -> Reply:
        user = decision.user_id
        now = self.clock()
        try:
            with self.ledger.engine.begin() as conn:
                invoice = self._open_draft(conn, decision, lock=True)
                before = self._summary(conn, invoice)
                changed, changes = self._apply(
                    conn, invoice, decision.adjustments, user, now, decision.version
                )
                queue_draft_edits(conn, changed, now)
                invoice = invoice_row(conn, invoice.id)
                message = self._message_of(decision, invoice)
                self._queue_post(
                    conn, invoice, now, user, replace=True, message=message, previous=before
                )
                audit(
                    conn,
                    now,
                    user,
                    "adjusted",
                    f"invoice:{invoice.id}",
                    channel=channel,
                    from_version=decision.version,
                    to_version=int(invoice.version),
                    changes=changes,
                )
        except _NotApplicable as exc:
            return Reply("not_applicable", decision, notice=str(exc))
        except _Invalid as exc:
            return Reply(
                "invalid", decision, body={"response_action": "errors", "errors": exc.errors}
            )
        log.info("slack.adjusted", invoice=decision.invoice_id, by=user, lines=len(changed))
        return Reply("adjusted", decision, drain=True)

    def _apply(
        self,
        conn: Connection,
        invoice: InvoiceRecord,
        adjustments: tuple[LineAdjustment, ...],
        user: str,
        now: datetime,
        version: int,
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """Ask `mapping.invoices.decide_adjust`, then apply its answer: excluded entries
        voided, write-offs recorded as voided entries, repriced entries updated (with
        the amount the core computed). Returns the changed entry ids and the audit's
        change list, in the order of the form."""
        draft = draft_view(conn, int(invoice.id))
        items = [line.item_key for line in draft.lines] if draft is not None else []
        decision = decide_adjust(
            draft,
            user,
            tuple(
                LineChange(a.entry_id, a.hours, a.rate, a.description, a.exclude)
                for a in adjustments
            ),
            is_approver=True,  # checked before (`decide` / `adjust_lines`)
            version=version,
            time_seqs=time_seqs(conn, items),
        )
        if isinstance(decision, Refused):
            if decision.refusal is Refusal.INVALID and decision.errors:
                raise _Invalid(
                    {
                        line_block_id(entry, field): text
                        for (entry, field), text in decision.errors.items()
                    }
                )
            raise _NotApplicable(self._explain(conn, int(invoice.id), version))
        lines = {line.entry_id: line for line in draft.lines} if draft is not None else {}
        excluded = {e.entry_id for e in decision.excluded}
        repriced = {r.entry_id: r for r in decision.repriced}
        changed: list[int] = []
        changes: list[dict[str, Any]] = []
        for entry_id in dict.fromkeys(a.entry_id for a in adjustments):
            if entry_id in excluded:
                move_entry(conn, entry_id, EntryState.VOIDED, user, f"excluded by {user}", now)
                changed.append(entry_id)
                changes.append({"entry_id": entry_id, "excluded": True})
                continue
            fix = repriced.get(entry_id)
            if fix is None:
                continue
            for off in decision.write_offs:
                if off.from_entry_id == entry_id:
                    record_write_off(conn, off, now)
            line = lines[entry_id]
            values: dict[str, Any] = {}
            change: dict[str, Any] = {"entry_id": entry_id}
            if "hours" in fix.what:
                change["hours"] = [str(line.hours), str(fix.hours)]
            if "rate" in fix.what:
                change["rate"] = [str(line.rate), str(fix.rate)]
            if "hours" in fix.what or "rate" in fix.what:
                values.update(
                    hours=fix.hours,
                    rate=fix.rate,
                    amount=fix.amount.amount if fix.amount is not None else None,
                )
            if fix.description is not None:
                values["description"] = fix.description
                change["description"] = True
            move_entry(
                conn,
                entry_id,
                EntryState.DRAFTED,
                user,
                f"adjusted by {user}: {', '.join(fix.what)}",
                now,
                **values,
            )
            changed.append(entry_id)
            changes.append(change)
        return changed, changes


# --------------------------------------------------------------------------------------
# The desk of a set of services (built by the composition root)
# --------------------------------------------------------------------------------------


class HasDesk(Protocol):
    """What holds the desk: `sync.composition.Services`."""

    desk: ApprovalDesk


def desk_for(
    services: HasDesk, slack_factory: SlackFactory | Literal["settings"] | None = "settings"
) -> ApprovalDesk:
    """The `ApprovalDesk` the composition root built for these services.

    With an explicit factory (or None: no Slack) the desk is replaced by one reaching
    Slack that way, and that one is returned from now on (tests).
    """
    if slack_factory != "settings":
        services.desk = services.desk.with_slack(slack_factory)
    return services.desk
