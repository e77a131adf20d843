"""Slack approvals: finance approves, adjusts or rejects each Stripe draft from Slack.

Pieces (the ledger, approval rules and HTTP routes live in `sync`):

- `model`: `DraftSummary` / `DraftLine` (what to show), `Decision` /
  `LineAdjustment` (what Slack said).
- `messages`: Block Kit for the approval message, the decided message, the Adjust
  and Reject modals, and the ephemeral refusal / stale / already-decided texts.
- `verify`: `verify_slack_request` (signature + 300 s window over the raw body),
  `parse_interaction` / `extract_payload` + `decision_from_payload`.
- `client`: `SlackApprovals` (Web API calls with bounded retries; `RetriableError` /
  `FatalError` on failure).
- `socket_mode`: `run_socket_mode`, feeding payloads to the same handler as HTTP.

Interaction flow for the route (HTTP or Socket Mode), each answered within 3 s:

- ``approve``: check approver + version, record the approval, enqueue finalize,
  `SlackApprovals.update_decided(..., "approved", ...)`.
- ``reject`` with ``reason is None`` (the Reject button, after its confirm dialog):
  either reject at once without a reason, or `open_reject_modal` with the
  decision's ``trigger_id``, ``channel_id`` and ``message_ts``; the modal's submit
  comes back as ``reject`` with the (required, non-blank) ``reason``.
- ``adjust_open``: `open_adjust_modal(trigger_id, summary, channel_id, message_ts)`.
- ``adjust_submit``: apply ``adjustments`` (only changed lines; blank fields are
  None = keep), bump the version, then `repost_draft`. Invalid numbers raise
  `SlackInputInvalid`; answer with its ``response_body()``.
- Not an approver: `refusal_text` via `post_ephemeral` or `respond(response_url)`.
"""

from __future__ import annotations

from connectors.slack.client import (
    RetryPolicy,
    SlackApprovals,
    SlackCallFailed,
    SlackIdentity,
    SlackUnavailable,
)
from connectors.slack.messages import (
    ACTION_ADJUST,
    ACTION_APPROVE,
    ACTION_APPROVE_FORCE,
    ACTION_DRAFT_ALL,
    ACTION_REJECT,
    CALLBACK_ADJUST,
    CALLBACK_REJECT,
    DraftRef,
    adjust_modal,
    already_decided_text,
    approval_blocks,
    approval_text,
    decided_blocks,
    decided_text,
    format_money,
    refusal_text,
    reject_modal,
    stale_text,
)
from connectors.slack.model import Decision, DraftLine, DraftSummary, LineAdjustment, Outcome
from connectors.slack.socket_mode import ack_for, make_listener, run_socket_mode
from connectors.slack.verify import (
    SlackInputInvalid,
    SlackRequestRejected,
    decision_from_payload,
    extract_payload,
    parse_interaction,
    verify_slack_request,
)

__all__ = [
    "ACTION_ADJUST",
    "ACTION_APPROVE",
    "ACTION_APPROVE_FORCE",
    "ACTION_DRAFT_ALL",
    "ACTION_REJECT",
    "CALLBACK_ADJUST",
    "CALLBACK_REJECT",
    "Decision",
    "DraftLine",
    "DraftRef",
    "DraftSummary",
    "LineAdjustment",
    "Outcome",
    "RetryPolicy",
    "SlackApprovals",
    "SlackCallFailed",
    "SlackIdentity",
    "SlackInputInvalid",
    "SlackRequestRejected",
    "SlackUnavailable",
    "ack_for",
    "adjust_modal",
    "already_decided_text",
    "approval_blocks",
    "approval_text",
    "decided_blocks",
    "decided_text",
    "decision_from_payload",
    "extract_payload",
    "format_money",
    "make_listener",
    "parse_interaction",
    "refusal_text",
    "reject_modal",
    "run_socket_mode",
    "stale_text",
    "verify_slack_request",
]
