"""SlackApprovals against the fake Slack Web API, over real HTTP (base_url -> the fake)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from connectors.base import FatalError, RetriableError
from connectors.slack.client import RetryPolicy, SlackApprovals, SlackCallFailed, SlackUnavailable
from connectors.slack.messages import ACTION_APPROVE, CALLBACK_ADJUST, decode_ref
from connectors.slack.model import DraftLine, DraftSummary
from tests.fakes.slack_server import DEFAULT_TOKEN, FakeSlack, serve_fake_slack

AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
FAST = RetryPolicy(max_retries=3, backoff=0.01, max_backoff=0.05, retry_after_scale=0.01, timeout=5)


def draft(version: int = 1, hours: str = "12.5") -> DraftSummary:
    lines = (
        DraftLine(
            101,
            "Fix login",
            "https://github.com/acme/web/issues/101",
            Decimal(hours),
            Decimal("95"),
            Decimal(hours) * 95,
            "time",
            "",
        ),
        DraftLine(
            103,
            "Launch",
            "https://github.com/acme/web/issues/103",
            Decimal("20"),
            None,
            Decimal("5000"),
            "milestone",
            "",
        ),
    )
    return DraftSummary(
        42,
        "acme",
        "Acme GmbH",
        "November 2026",
        "EUR",
        lines,
        sum((ln.amount for ln in lines), Decimal(0)),
        "https://dashboard.stripe.com/invoices/in_1",
        version,
    )


@pytest.fixture
def fake() -> FakeSlack:
    return FakeSlack(usergroups={"S0FINANCE": ["U0GROUP1", "U0GROUP2"]})


@pytest.fixture
def base_url(fake: FakeSlack) -> Iterator[str]:
    with serve_fake_slack(fake) as url:
        yield url


@pytest.fixture
def slack(base_url: str) -> SlackApprovals:
    return SlackApprovals(DEFAULT_TOKEN, base_url=base_url, retry=FAST)


def test_runner_yields_an_api_base_url(base_url: str) -> None:
    assert base_url.startswith("http://127.0.0.1:")
    assert base_url.endswith("/api/")


async def test_auth_test(slack: SlackApprovals) -> None:
    identity = await slack.auth_test()
    assert identity.team_id == "T0KANVOICE"
    assert identity.user_id == "U0KVBOT"
    assert identity.url.startswith("https://")


async def test_wrong_token_is_a_fatal_auth_error(base_url: str, fake: FakeSlack) -> None:
    bad = SlackApprovals("xoxb-wrong", base_url=base_url, retry=FAST)
    with pytest.raises(SlackCallFailed) as info:
        await bad.auth_test()
    assert isinstance(info.value, FatalError)
    assert info.value.error == "invalid_auth" and info.value.is_auth_error
    assert fake.calls_to("auth.test")[-1].token == "xoxb-wrong"


async def test_post_draft_posts_blocks_and_returns_channel_and_ts(
    slack: SlackApprovals, fake: FakeSlack
) -> None:
    channel, ts = await slack.post_draft("#finance-approvals", draft())
    assert channel == "C0FINANCE"
    message = fake.message(channel, ts)
    assert "Fix login" in message.all_text()
    assert json.loads(message.action_values()[ACTION_APPROVE]) == {"invoice_id": 42, "version": 1}
    call = fake.calls_to("chat.postMessage")[0]
    assert call.token == DEFAULT_TOKEN
    assert call.args["unfurl_links"] is False
    assert "Acme GmbH" in call.args["text"]


async def test_unknown_channel_is_a_call_failure(slack: SlackApprovals) -> None:
    with pytest.raises(SlackCallFailed, match="channel_not_found"):
        await slack.post_draft("#nowhere", draft())


async def test_update_decided_replaces_the_buttons(slack: SlackApprovals, fake: FakeSlack) -> None:
    channel, ts = await slack.post_draft("C0FINANCE", draft())
    await slack.update_decided(channel, ts, draft(), "approved", "U0GROUP1", AT)
    message = fake.message(channel, ts)
    assert message.action_values() == {}
    assert "*Approved* by <@U0GROUP1>" in message.all_text()
    assert len(message.history) == 1
    with pytest.raises(SlackCallFailed, match="message_not_found"):
        await slack.update_decided(channel, "1.000000", draft(), "approved", "U1", AT)


async def test_repost_marks_the_old_message_and_posts_the_new_version(
    slack: SlackApprovals, fake: FakeSlack
) -> None:
    channel, ts = await slack.post_draft("C0FINANCE", draft(1))
    new_channel, new_ts = await slack.repost_draft(
        channel, ts, draft(2, hours="10"), "U0GROUP1", AT, previous=draft(1)
    )
    assert (new_channel, new_ts != ts) == (channel, True)
    old, new = fake.message(channel, ts), fake.message(channel, new_ts)
    assert "*Adjusted*" in old.all_text() and old.action_values() == {}
    assert "6,187.50 EUR" in old.all_text() and "version 1" in old.all_text()  # old figures
    assert "5,950.00 EUR" in new.all_text()
    assert decode_ref(new.action_values()[ACTION_APPROVE]).version == 2
    assert [m.ts for m in fake.channel_messages(channel)] == [ts, new_ts]


async def test_post_ephemeral(slack: SlackApprovals, fake: FakeSlack) -> None:
    await slack.post_ephemeral("C0FINANCE", "U0STRANGER", "Sorry, only approvers")
    assert fake.ephemerals == [
        {
            "channel": "C0FINANCE",
            "user": "U0STRANGER",
            "text": "Sorry, only approvers",
            "ts": fake.ephemerals[0]["ts"],
        }
    ]


async def test_respond_through_response_url(slack: SlackApprovals, fake: FakeSlack) -> None:
    channel, ts = await slack.post_draft("C0FINANCE", draft())
    url = fake.response_url(channel, ts, "U0STRANGER")
    await slack.respond(url, "Only approvers can decide")
    assert fake.ephemerals[-1]["user"] == "U0STRANGER"
    assert fake.ephemerals[-1]["text"] == "Only approvers can decide"
    with pytest.raises(SlackCallFailed):
        await slack.respond(url.rsplit("/", 1)[0] + "/expired", "late")


async def test_open_adjust_modal(slack: SlackApprovals, fake: FakeSlack) -> None:
    trigger = fake.new_trigger_id()
    view_id = await slack.open_adjust_modal(trigger, draft(), "C0FINANCE", "1790000001.000001")
    view = fake.views[view_id]
    assert view["callback_id"] == CALLBACK_ADJUST
    ref = decode_ref(view["private_metadata"])
    assert (ref.invoice_id, ref.version, ref.message_ts) == (42, 1, "1790000001.000001")
    assert fake.calls_to("views.open")[0].args["trigger_id"] == trigger


async def test_expired_trigger_is_a_call_failure(slack: SlackApprovals, fake: FakeSlack) -> None:
    trigger = fake.new_trigger_id()
    fake.expired_triggers.add(trigger)
    with pytest.raises(SlackCallFailed, match="expired_trigger_id"):
        await slack.open_reject_modal(trigger, draft())


async def test_usergroup_membership_is_checked_and_cached(base_url: str, fake: FakeSlack) -> None:
    now = [0.0]
    slack = SlackApprovals(
        DEFAULT_TOKEN, base_url=base_url, retry=FAST, group_cache_ttl=60, clock=lambda: now[0]
    )
    assert await slack.is_approver("U0LISTED", {"U0LISTED"}, "S0FINANCE")
    assert fake.calls_to("usergroups.users.list") == []  # the list is enough
    assert await slack.is_approver("U0GROUP2", {"U0LISTED"}, "S0FINANCE")
    assert not await slack.is_approver("U0STRANGER", {"U0LISTED"}, "S0FINANCE")
    assert len(fake.calls_to("usergroups.users.list")) == 1  # cached
    assert fake.calls_to("usergroups.users.list")[0].args["usergroup"] == "S0FINANCE"
    fake.set_group("S0FINANCE", ["U0STRANGER"])
    now[0] = 61
    assert await slack.is_approver("U0STRANGER", set(), "S0FINANCE")
    assert len(fake.calls_to("usergroups.users.list")) == 2
    assert not await slack.is_approver("U0GROUP2", set(), None)


async def test_unknown_usergroup_fails_loudly(slack: SlackApprovals) -> None:
    with pytest.raises(SlackCallFailed, match="no_such_subteam"):
        await slack.is_approver("U1", set(), "S0MISSING")


async def test_429_is_retried_after_retry_after(slack: SlackApprovals, fake: FakeSlack) -> None:
    fake.inject_fault(429, method="chat.postMessage", retry_after=2, times=2)
    started = time.monotonic()
    channel, ts = await slack.post_draft("C0FINANCE", draft())
    assert time.monotonic() - started < 2  # Retry-After 2 s x scale 0.01
    statuses = [c.status for c in fake.calls_to("chat.postMessage")]
    assert statuses == [429, 429, 200]
    assert fake.message(channel, ts)


async def test_retry_after_is_honoured(base_url: str, fake: FakeSlack) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    slack = SlackApprovals(DEFAULT_TOKEN, base_url=base_url, retry=RetryPolicy(), sleep=sleep)
    fake.inject_fault(429, method="auth.test", retry_after=7)
    await slack.auth_test()
    assert waits == [7.0]


async def test_long_retry_after_is_not_waited_for(slack: SlackApprovals, fake: FakeSlack) -> None:
    fake.inject_fault(429, method="chat.postMessage", retry_after=120)
    with pytest.raises(SlackUnavailable) as info:
        await slack.post_draft("C0FINANCE", draft())
    assert isinstance(info.value, RetriableError)
    assert info.value.retry_after == 120
    assert len(fake.calls_to("chat.postMessage")) == 1


async def test_500_then_success(slack: SlackApprovals, fake: FakeSlack) -> None:
    fake.inject_fault(500, method="chat.update")
    channel, ts = await slack.post_draft("C0FINANCE", draft())
    await slack.update_decided(channel, ts, draft(), "rejected", "U0GROUP1", AT, "wrong")
    assert [c.status for c in fake.calls_to("chat.update")] == [500, 200]


async def test_persistent_500_is_a_retriable_error_in_bounded_time(
    slack: SlackApprovals, fake: FakeSlack
) -> None:
    fake.inject_fault(500, times=100)
    started = time.monotonic()
    with pytest.raises(RetriableError, match="server error 500"):
        await slack.post_draft("C0FINANCE", draft())
    assert time.monotonic() - started < 3
    assert len(fake.calls_to("chat.postMessage")) == 1 + FAST.max_retries


async def test_ok_false_retriable_error_code(slack: SlackApprovals, fake: FakeSlack) -> None:
    fake.inject_fault(200, method="auth.test", error="service_unavailable")
    with pytest.raises(SlackUnavailable, match="service_unavailable"):
        await slack.auth_test()


async def test_slack_unreachable_is_retriable(fake: FakeSlack) -> None:
    with serve_fake_slack(fake) as url:
        pass  # the server is gone, its port closed
    slack = SlackApprovals(DEFAULT_TOKEN, base_url=url, retry=FAST)
    started = time.monotonic()
    with pytest.raises(RetriableError):
        await slack.auth_test()
    assert time.monotonic() - started < 5


async def test_deadline_bounds_a_slow_slack(base_url: str, fake: FakeSlack) -> None:
    slow = RetryPolicy(max_retries=100, backoff=0.05, max_backoff=0.05, deadline=0.5)
    slack = SlackApprovals(DEFAULT_TOKEN, base_url=base_url, retry=slow)
    fake.inject_fault(503, times=1000)
    started = time.monotonic()
    with pytest.raises(SlackUnavailable, match="no answer within"):
        await slack.auth_test()
    assert time.monotonic() - started < 2


async def test_post_alert_posts_a_budget_alert_without_buttons(
    slack: SlackApprovals, fake: FakeSlack
) -> None:
    text = "Budget 100 % reached: client:acme: 212 h of 200 h (106.0 %)"
    channel, ts = await slack.post_alert("#finance-approvals", text, True, "Acme GmbH")
    assert channel == "C0FINANCE"
    message = fake.message(channel, ts)
    assert "212 h of 200 h" in message.all_text() and "Acme GmbH" in message.all_text()
    assert message.action_values() == {}
    assert fake.calls_to("chat.postMessage")[0].args["text"].startswith(":rotating_light:")


async def test_an_over_budget_draft_says_so_before_the_buttons(
    slack: SlackApprovals, fake: FakeSlack
) -> None:
    base = draft()
    flagged = replace(
        base,
        lines=(replace(base.lines[0], flags=("over budget (client:acme)",)), base.lines[1]),
        flags=("over budget: client:acme: 212 h of 200 h (106.0 %)",),
    )
    channel, ts = await slack.post_draft("#finance-approvals", flagged)
    message = fake.message(channel, ts)
    text = message.all_text()
    assert text.index("Check before approving") < text.index("Fix login")
    assert "over budget (client:acme)" in text
    assert "Over budget" in fake.calls_to("chat.postMessage")[0].args["text"]
