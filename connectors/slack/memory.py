"""`InMemorySlack`: a `SlackPort` in process, for `kanvoice demo` and unit tests.

It keeps what the approval desk relies on: channel names resolve to ids (an unknown
channel is ``channel_not_found``), every post gets a fresh ``ts``, an update needs the
message to exist (``message_not_found`` otherwise), approver groups have members
(``no_such_subteam`` for an unknown one).
Messages are rendered with the same Block Kit builders as the real client, so what
is "posted" here is what Slack would show. The HTTP wire fake in
``tests/fakes/slack_server.py`` is what the real client is tested on.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from slack_sdk.models.blocks import Block

from connectors.slack import messages
from connectors.slack.client import SlackCallFailed
from connectors.slack.model import DraftSummary, Outcome
from mapping.digest import Digest

if TYPE_CHECKING:
    from connectors.slack.port import SlackPort


@dataclass
class PostedMessage:
    """One message as the channel shows it now (``text`` and Block Kit ``blocks``)."""

    channel: str
    ts: str
    text: str
    blocks: list[Block]
    invoice_id: int | None  # None: not an approval message (the digest)
    outcome: Outcome | None = None
    decided_by: str | None = None


@dataclass
class InMemorySlack:
    """A workspace's channels, notices, modals and user groups; see the module docstring."""

    channels: Mapping[str, str] = field(default_factory=dict)  # name (no "#") -> id
    groups: Mapping[str, Iterable[str]] = field(default_factory=dict)
    messages: dict[tuple[str, str], PostedMessage] = field(default_factory=dict)
    notices: list[tuple[str, str, str]] = field(default_factory=list)  # (where, user, text)
    views: list[tuple[str, str, int]] = field(default_factory=list)  # (view id, kind, invoice)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _channel(self, channel: str, method: str = "chat.postMessage") -> str:
        if channel in self.channels.values():
            return channel
        found = self.channels.get(channel.lstrip("#"))
        if found is None:
            raise SlackCallFailed(method, "channel_not_found")
        return found

    def _ts(self) -> str:
        return f"1790000000.{next(self._seq):06d}"

    def in_channel(self, channel: str) -> list[PostedMessage]:
        """The channel's messages, oldest first."""
        cid = self._channel(channel)
        return [m for (c, _), m in self.messages.items() if c == cid]

    # --- the port ---------------------------------------------------------------------

    async def post_draft(self, channel: str, summary: DraftSummary) -> tuple[str, str]:
        cid, ts = self._channel(channel), self._ts()
        self.messages[(cid, ts)] = PostedMessage(
            cid,
            ts,
            messages.approval_text(summary),
            messages.approval_blocks(summary),
            summary.invoice_id,
        )
        return cid, ts

    async def post_digest(self, channel: str, digest: Digest) -> tuple[str, str]:
        cid, ts = self._channel(channel), self._ts()
        self.messages[(cid, ts)] = PostedMessage(
            cid, ts, messages.digest_text(digest), messages.digest_blocks(digest), None
        )
        return cid, ts

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
        message = self.messages.get((self._channel(channel, "chat.update"), ts))
        if message is None:
            raise SlackCallFailed("chat.update", "message_not_found")
        message.text = messages.decided_text(summary, outcome, user, at)
        message.blocks = messages.decided_blocks(summary, outcome, user, at, reason)
        message.outcome, message.decided_by = outcome, user

    async def repost_draft(
        self,
        channel: str,
        ts: str,
        summary: DraftSummary,
        user: str,
        at: datetime,
        previous: DraftSummary | None = None,
    ) -> tuple[str, str]:
        await self.update_decided(channel, ts, previous or summary, "adjusted", user, at)
        return await self.post_draft(channel, summary)

    async def post_alert(
        self, channel: str, text: str, over: bool, client_name: str
    ) -> tuple[str, str]:
        cid, ts = self._channel(channel), self._ts()
        self.messages[(cid, ts)] = PostedMessage(
            cid,
            ts,
            messages.budget_alert_text(text, over),
            messages.budget_alert_blocks(text, over, client_name),
            0,
        )
        return cid, ts

    async def post_ephemeral(self, channel: str, user: str, text: str) -> None:
        self.notices.append((self._channel(channel, "chat.postEphemeral"), user, text))

    async def respond(
        self,
        response_url: str,
        text: str,
        *,
        ephemeral: bool = True,
        replace_original: bool = False,
    ) -> None:
        self.notices.append((response_url, "", text))

    async def open_adjust_modal(
        self,
        trigger_id: str,
        summary: DraftSummary,
        channel_id: str | None = None,
        message_ts: str | None = None,
    ) -> str:
        return self._open("adjust", trigger_id, summary)

    async def open_reject_modal(
        self,
        trigger_id: str,
        summary: DraftSummary,
        channel_id: str | None = None,
        message_ts: str | None = None,
    ) -> str:
        return self._open("reject", trigger_id, summary)

    def _open(self, kind: str, trigger_id: str, summary: DraftSummary) -> str:
        if not trigger_id:
            raise SlackCallFailed("views.open", "invalid_trigger_id")
        view_id = f"V{next(self._seq):08d}"
        self.views.append((view_id, kind, summary.invoice_id))
        return view_id

    async def is_approver(
        self, user_id: str, approvers: Iterable[str], group_id: str | None
    ) -> bool:
        if user_id in set(approvers):
            return True
        if not group_id:
            return False
        if group_id not in self.groups:
            raise SlackCallFailed("usergroups.users.list", "no_such_subteam")
        return user_id in set(self.groups[group_id])


if TYPE_CHECKING:  # mypy: the in-memory adapter satisfies the port
    _port: type[SlackPort] = InMemorySlack
