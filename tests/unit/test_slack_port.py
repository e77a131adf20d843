"""The `SlackPort` contract, run against both adapters: the in-memory Slack of the
demo, and the real client over HTTP against the wire fake."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from connectors.slack.client import RetryPolicy, SlackApprovals, SlackCallFailed
from connectors.slack.memory import InMemorySlack
from connectors.slack.model import DraftLine, DraftSummary
from connectors.slack.port import SlackPort
from tests.fakes.slack_server import DEFAULT_TOKEN, FakeSlack, serve_fake_slack

AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
FAST = RetryPolicy(max_retries=1, backoff=0.01, max_backoff=0.05, retry_after_scale=0.01, timeout=5)
CHANNELS = {"finance-approvals": "C0FINANCE"}
GROUPS = {"S0FINANCE": ["U0GROUP1"]}


def summary(version: int = 1) -> DraftSummary:
    line = DraftLine(
        101, "Fix login", "https://example.test/101", Decimal("2"), Decimal("95"), Decimal("190"),
        "time", "",
    )  # fmt: skip
    return DraftSummary(
        42, "acme", "Acme GmbH", "November 2026", "EUR", (line,), Decimal("190"), None, version
    )


@pytest.fixture(params=["memory", "client"])
def port(request: pytest.FixtureRequest) -> Iterator[SlackPort]:
    if request.param == "memory":
        yield InMemorySlack(channels=CHANNELS, groups=GROUPS)
        return
    with serve_fake_slack(FakeSlack(channels=CHANNELS, usergroups=GROUPS)) as url:
        yield SlackApprovals(DEFAULT_TOKEN, base_url=url, retry=FAST)


async def test_posts_answer_the_channel_id_and_a_fresh_ts(port: SlackPort) -> None:
    channel, ts = await port.post_draft("#finance-approvals", summary())
    assert channel == "C0FINANCE"
    again = await port.post_draft(channel, summary())
    assert again[0] == channel and again[1] != ts
    with pytest.raises(SlackCallFailed) as unknown:
        await port.post_draft("#nowhere", summary())
    assert unknown.value.error == "channel_not_found"


async def test_updates_need_the_message(port: SlackPort) -> None:
    channel, ts = await port.post_draft("finance-approvals", summary())
    await port.update_decided(channel, ts, summary(), "approved", "U0FINANCE", AT)
    new = await port.repost_draft(channel, ts, summary(2), "U0FINANCE", AT, previous=summary())
    assert new[0] == channel and new[1] != ts
    with pytest.raises(SlackCallFailed) as gone:
        await port.update_decided(channel, "1.000001", summary(), "approved", "U0FINANCE", AT)
    assert gone.value.error == "message_not_found"


async def test_approvers_are_listed_or_in_the_group(port: SlackPort) -> None:
    assert await port.is_approver("U0LISTED", ["U0LISTED"], None)
    assert await port.is_approver("U0GROUP1", [], "S0FINANCE")
    assert not await port.is_approver("U0OTHER", ["U0LISTED"], "S0FINANCE")
    assert not await port.is_approver("U0OTHER", [], None)
    with pytest.raises(SlackCallFailed) as unknown:
        await port.is_approver("U0OTHER", [], "S0NOSUCH")
    assert unknown.value.error == "no_such_subteam"


async def test_notices_and_modals() -> None:
    slack = InMemorySlack(channels=CHANNELS)
    channel, ts = await slack.post_draft("finance-approvals", summary())
    await slack.post_ephemeral(channel, "U0OTHER", "not an approver")
    view = await slack.open_adjust_modal("trigger-1", summary(), channel, ts)
    assert slack.notices == [("C0FINANCE", "U0OTHER", "not an approver")]
    assert slack.views == [(view, "adjust", 42)]
    with pytest.raises(SlackCallFailed):
        await slack.open_reject_modal("", summary())
    (message,) = slack.in_channel("#finance-approvals")
    assert message.outcome is None and "Approval needed" in message.text
