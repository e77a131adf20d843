"""Which Slack interactions go through the inbox, and their dedupe keys."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from connectors.slack import Decision
from sync.web.slack_routes import interaction_id, queued_through_inbox

BASE = Decision(
    kind="approve",
    invoice_id=7,
    version=2,
    user_id="U1",
    user_name="ann",
    team_id=None,
    channel_id="C1",
    message_ts="1.2",
    response_url=None,
    trigger_id="t-1",
    reason=None,
    adjustments=(),
)


@pytest.mark.parametrize(
    ("kind", "reason", "queued"),
    [
        ("approve", None, True),  # moves money: inbox, applied by the worker
        ("approve_force", None, True),
        ("reject", "wrong rate", True),  # the reject modal's submit
        ("reject", None, False),  # the Reject button: opens a modal (trigger id, 3 s)
        ("adjust_open", None, False),  # opens a modal
        ("adjust_submit", None, False),  # answers its validation errors in the request
    ],
)
def test_money_moving_decisions_go_through_the_inbox(
    kind: Any, reason: str | None, queued: bool
) -> None:
    assert queued_through_inbox(replace(BASE, kind=kind, reason=reason)) is queued


def test_interaction_ids_tell_clicks_and_submits_apart() -> None:
    click = {"user": {"id": "U1"}, "actions": [{"action_ts": "170.1"}]}
    assert interaction_id(click) == "action:U1:170.1"
    assert interaction_id(click) != interaction_id(
        {"user": {"id": "U1"}, "actions": [{"action_ts": "170.2"}]}
    )
    submit = {"user": {"id": "U1"}, "view": {"id": "V1", "hash": "h"}, "trigger_id": "t9"}
    assert interaction_id(submit) == "view:V1:t9"
    odd = {"user": {"id": "U1"}, "type": "something"}
    assert interaction_id(odd).startswith("sha256:") and interaction_id(odd) == interaction_id(
        dict(odd)
    )
