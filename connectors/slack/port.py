"""`SlackPort`: the Slack calls the approval desk makes.

Two adapters satisfy it: `connectors.slack.client.SlackApprovals` (Slack's Web API,
with bounded retries) and `connectors.slack.memory.InMemorySlack` (the demo's and unit
tests' Slack, in process). The HTTP wire fake in ``tests/fakes`` is the contract test
of the first one.

The semantics every adapter keeps:

- Messages are addressed by Slack's ``(channel id, ts)``; posting returns them (a
  channel *name* in, its *id* out). Updating a message that is gone raises
  `SlackCallFailed` with ``message_not_found`` (the desk then posts anew).
- None of these calls is idempotent on Slack's side: the desk's outbox records what
  was done (the ``ts``) and decides what to repeat.
- Errors are the connector taxonomy: `SlackUnavailable` (a `RetriableError`: down,
  rate limited, ``retry_after`` when Slack said), `SlackCallFailed` (a `FatalError`:
  Slack's ``error`` code, a person must act).
- Modal calls must answer within Slack's 3 s trigger window (the adapter's budget).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from connectors.slack.model import DraftSummary, Outcome
from mapping.digest import Digest


class SlackPort(Protocol):
    """Post, update and re-post approval messages; the finance digest; notices; modals;
    approver groups."""

    async def post_draft(self, channel: str, summary: DraftSummary) -> tuple[str, str]:
        """Post the approval message (lines, total, buttons); returns (channel id, ts)."""
        ...

    async def post_digest(self, channel: str, digest: Digest) -> tuple[str, str]:
        """Post the finance digest (gap per currency, waiting clients, drafts, overdue
        invoices, "Draft all"); returns (channel id, ts). Not idempotent on Slack's
        side: the outbox key per scheduled slot makes it one post."""
        ...

    async def update_decided(
        self,
        channel: str,
        ts: str,
        summary: DraftSummary,
        outcome: Outcome,
        user: str,
        at: datetime,
        reason: str | None = None,
    ) -> None:
        """Replace the message with who decided what and when (no buttons left)."""
        ...

    async def repost_draft(
        self,
        channel: str,
        ts: str,
        summary: DraftSummary,
        user: str,
        at: datetime,
        previous: DraftSummary | None = None,
    ) -> tuple[str, str]:
        """Mark the old message adjusted (`previous` figures), then post `summary` anew."""
        ...

    async def post_alert(
        self, channel: str, text: str, over: bool, client_name: str
    ) -> tuple[str, str]:
        """Post a budget alert (no buttons); returns (channel id, ts)."""
        ...

    async def post_ephemeral(self, channel: str, user: str, text: str) -> None:
        """A notice only `user` sees in `channel` (refusals, stale clicks)."""
        ...

    async def respond(
        self,
        response_url: str,
        text: str,
        *,
        ephemeral: bool = True,
        replace_original: bool = False,
    ) -> None:
        """Answer through an interaction's ``response_url``."""
        ...

    async def open_adjust_modal(
        self,
        trigger_id: str,
        summary: DraftSummary,
        channel_id: str | None = None,
        message_ts: str | None = None,
    ) -> str:
        """Open the Adjust form for the click's `trigger_id`; returns the view id."""
        ...

    async def open_reject_modal(
        self,
        trigger_id: str,
        summary: DraftSummary,
        channel_id: str | None = None,
        message_ts: str | None = None,
    ) -> str:
        """Open the reject-reason form for the click's `trigger_id`; returns the view id."""
        ...

    async def is_approver(
        self, user_id: str, approvers: Iterable[str], group_id: str | None
    ) -> bool:
        """Listed in `approvers` or a member of the user group `group_id`; raises
        `SlackUnavailable` / `SlackCallFailed` when the group cannot be read."""
        ...
