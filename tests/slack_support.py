"""Settings that point kanvoice at a fake Slack, its approval desk on them, and signed
interactions posted to the app."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.slack import RetryPolicy
from sync.approvals import ApprovalDesk, desk_for
from sync.composition import Services, slack_client_factory
from tests.fakes.slack_server import DEFAULT_TOKEN, signed_interaction_request
from tests.stripe_support import APPROVER

SIGNING_SECRET = "kanvoice-slack-signing-secret"
CHANNEL = "C0FINANCE"
INTRUDER = "U0INTRUDER"
FAST = RetryPolicy(
    max_retries=2,
    backoff=0.01,
    max_backoff=0.02,
    max_retry_after=5,
    retry_after_scale=0.01,
    timeout=5,
    deadline=10,
)


def slack_settings(api_url: str, **extra: Any) -> dict[str, Any]:
    """The `[slack]` settings: the bot on the fake Slack at `api_url`, approval requests
    in CHANNEL, APPROVER approving, interactions signed with SIGNING_SECRET."""
    return {
        "bot_token": DEFAULT_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "channel": CHANNEL,
        "approvers": [APPROVER],
        "api_url": api_url,
        **extra,
    }


def with_slack_desk(services: Services, retry: RetryPolicy = FAST) -> ApprovalDesk:
    """The approval desk of `services`, now reaching the Slack of its settings with `retry`."""
    return desk_for(services, slack_client_factory(services.settings, retry=retry))


def post_interaction(
    http: httpx.Client,
    payload: Mapping[str, Any],
    *,
    secret: str = SIGNING_SECRET,
    at: int | None = None,
) -> httpx.Response:
    """POST `payload` to /slack/interactions as Slack does, signed with `secret` at the
    Unix time `at` (now by default)."""
    stamp = int(time.time()) if at is None else at
    headers, body = signed_interaction_request(secret, payload, stamp)
    return http.post("/slack/interactions", content=body, headers=headers)
