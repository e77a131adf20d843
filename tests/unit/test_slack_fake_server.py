"""The fake Slack itself: Slack-shaped answers, limits, and genuinely signed round trips."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors.slack.client import RetryPolicy, SlackApprovals
from connectors.slack.messages import ACTION_ADJUST, ACTION_APPROVE, ACTION_REJECT
from connectors.slack.model import DraftLine, DraftSummary, LineAdjustment
from connectors.slack.verify import (
    SlackRequestRejected,
    extract_payload,
    parse_interaction,
    verify_slack_request,
)
from tests.fakes.slack_server import (
    DEFAULT_TOKEN,
    FakeSlack,
    serve_fake_slack,
    signed_interaction_request,
)

SECRET = "signing-secret-for-tests"
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}


def draft() -> DraftSummary:
    lines = (
        DraftLine(
            101,
            "Fix login",
            "https://github.com/acme/web/issues/101",
            Decimal("12.5"),
            Decimal("95"),
            Decimal("1187.5"),
            "time",
            "",
        ),
        DraftLine(
            102,
            "Checkout",
            "https://github.com/acme/web/issues/102",
            Decimal("3"),
            Decimal("110"),
            Decimal("330"),
            "time",
            "",
        ),
    )
    return DraftSummary(
        42, "acme", "Acme GmbH", "November 2026", "EUR", lines, Decimal("1517.5"), None, 5
    )


@pytest.fixture
def fake() -> FakeSlack:
    return FakeSlack(users={"U0MARIA": "maria"})


@pytest.fixture
def base_url(fake: FakeSlack) -> Iterator[str]:
    with serve_fake_slack(fake) as url:
        yield url


@pytest.fixture
def slack(base_url: str) -> SlackApprovals:
    return SlackApprovals(DEFAULT_TOKEN, base_url=base_url, retry=RetryPolicy(max_retries=0))


def post(
    base_url: str, method: str, headers: dict[str, str] | None = None, **kw: Any
) -> httpx.Response:
    return httpx.post(base_url + method, headers=headers or AUTH, timeout=5, **kw)


def test_auth_errors_have_slacks_shape(base_url: str) -> None:
    missing = httpx.post(base_url + "auth.test", timeout=5)
    assert (missing.status_code, missing.json()) == (200, {"ok": False, "error": "not_authed"})
    wrong = post(base_url, "auth.test", {"Authorization": "Bearer xoxb-nope"})
    assert wrong.json() == {"ok": False, "error": "invalid_auth"}
    form_token = post(base_url, "auth.test", {}, data={"token": DEFAULT_TOKEN})
    assert form_token.json()["ok"] is True


def test_unknown_method(base_url: str) -> None:
    answer = post(base_url, "chat.delete")
    assert answer.status_code == 404 and answer.json()["error"] == "unknown_method"


def test_message_limits_are_enforced(base_url: str, fake: FakeSlack) -> None:
    too_many = [{"type": "divider"}] * 51
    answer = post(base_url, "chat.postMessage", json={"channel": "C0FINANCE", "blocks": too_many})
    assert answer.json()["error"] == "invalid_blocks"
    dup = [{"type": "divider", "block_id": "a"}, {"type": "divider", "block_id": "a"}]
    answer = post(base_url, "chat.postMessage", json={"channel": "C0FINANCE", "blocks": dup})
    assert answer.json()["error"] == "invalid_blocks"
    assert post(base_url, "chat.postMessage", json={"channel": "C0FINANCE"}).json()["error"] == (
        "no_text"
    )
    assert fake.messages == {}


def test_modal_limits_are_enforced(base_url: str) -> None:
    view = {"type": "modal", "title": {"type": "plain_text", "text": "x" * 25}, "blocks": []}
    answer = post(base_url, "views.open", json={"trigger_id": "1.2.3", "view": view})
    assert answer.json()["error"] == "invalid_arguments"


def test_form_encoded_arguments_are_understood(base_url: str, fake: FakeSlack) -> None:
    blocks = json.dumps([{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}])
    answer = post(
        base_url, "chat.postMessage", data={"channel": "#finance-approvals", "blocks": blocks}
    )
    assert answer.json()["channel"] == "C0FINANCE"
    assert fake.message("C0FINANCE", answer.json()["ts"]).blocks[0]["type"] == "section"


def test_429_fault_has_retry_after(base_url: str, fake: FakeSlack) -> None:
    fake.inject_fault(429, retry_after=3)
    answer = post(base_url, "auth.test")
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "3"
    assert answer.json() == {"ok": False, "error": "ratelimited"}
    assert post(base_url, "auth.test").json()["ok"] is True


async def test_click_round_trip_is_signed_verified_and_parsed(
    slack: SlackApprovals, fake: FakeSlack
) -> None:
    channel, ts = await slack.post_draft("C0FINANCE", draft())
    now = int(time.time())
    for action_id, kind in (
        (ACTION_APPROVE, "approve"),
        (ACTION_REJECT, "reject"),
        (ACTION_ADJUST, "adjust_open"),
    ):
        payload = fake.click(channel, ts, action_id, "U0MARIA")
        headers, body = signed_interaction_request(SECRET, payload, now)
        verify_slack_request(SECRET, headers, body, now=now)
        decision = parse_interaction(body, headers["Content-Type"])
        assert decision is not None
        assert (decision.kind, decision.invoice_id, decision.version) == (kind, 42, 5)
        assert (decision.user_id, decision.user_name) == ("U0MARIA", "maria")
        assert (decision.channel_id, decision.message_ts) == (channel, ts)
    with pytest.raises(SlackRequestRejected):
        verify_slack_request("another-secret", headers, body, now=now)


async def test_a_decided_message_has_nothing_left_to_click(
    slack: SlackApprovals, fake: FakeSlack
) -> None:
    channel, ts = await slack.post_draft("C0FINANCE", draft())
    await slack.update_decided(channel, ts, draft(), "approved", "U0MARIA", datetime.now(UTC))
    with pytest.raises(KeyError):
        fake.click(channel, ts, ACTION_APPROVE, "U0MARIA")


async def test_adjust_modal_round_trip(slack: SlackApprovals, fake: FakeSlack) -> None:
    channel, ts = await slack.post_draft("C0FINANCE", draft())
    click = fake.click(channel, ts, ACTION_ADJUST, "U0MARIA")
    view_id = await slack.open_adjust_modal(click["trigger_id"], draft(), channel, ts)
    submission = fake.submit_view(
        view_id,
        {
            "line:101:hours": "10",
            "line:101:description": "Login (capped)",
            "line:102:exclude": True,
        },
        "U0MARIA",
    )
    headers, body = signed_interaction_request(SECRET, submission, 1_790_000_000)
    verify_slack_request(SECRET, headers, body, now=1_790_000_000)
    decision = parse_interaction(body, headers["Content-Type"])
    assert decision is not None and decision.kind == "adjust_submit"
    assert (decision.channel_id, decision.message_ts, decision.version) == (channel, ts, 5)
    assert decision.adjustments == (
        LineAdjustment(101, Decimal("10"), None, "Login (capped)", False),
        LineAdjustment(102, None, None, None, True),
    )


async def test_reject_modal_round_trip(slack: SlackApprovals, fake: FakeSlack) -> None:
    channel, ts = await slack.post_draft("C0FINANCE", draft())
    click = fake.click(channel, ts, ACTION_REJECT, "U0MARIA")
    view_id = await slack.open_reject_modal(click["trigger_id"], draft(), channel, ts)
    payload = fake.submit_view(view_id, {"reason": "Wrong client"}, "U0MARIA")
    headers, body = signed_interaction_request(SECRET, payload, 1_790_000_000)
    verify_slack_request(SECRET, headers, body, now=1_790_000_000)
    assert extract_payload(body, headers["Content-Type"]) == payload
    decision = parse_interaction(body, headers["Content-Type"])
    assert decision is not None
    assert (decision.kind, decision.reason, decision.message_ts) == ("reject", "Wrong client", ts)


async def test_response_url_can_replace_the_original(
    slack: SlackApprovals, fake: FakeSlack
) -> None:
    channel, ts = await slack.post_draft("C0FINANCE", draft())
    url = fake.click(channel, ts, ACTION_APPROVE, "U0MARIA")["response_url"]
    await slack.respond(url, "Approved by maria", ephemeral=False, replace_original=True)
    message = fake.message(channel, ts)
    assert message.text == "Approved by maria" and message.action_values() == {}
    assert fake.responses[0]["body"]["replace_original"] is True
