"""The "draft all due" pieces that need no ledger: the Slack button's payload, the
button itself, and the summary people read."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from connectors.slack import ACTION_DRAFT_ALL, SlackRequestRejected, decision_from_payload
from connectors.slack.messages import draft_all_button
from mapping.money import Money
from sync.draft_all import ClientDraft, DraftAllReport
from tests.conftest import DATA_DIR


def clicked(value: Any) -> dict[str, Any]:
    """Slack's captured block_actions payload, with the Draft all due button pressed."""
    payload: dict[str, Any] = json.loads(
        (DATA_DIR / "slack" / "block_actions_approve.json").read_text(encoding="utf-8")
    )
    payload["actions"][0].update(action_id=ACTION_DRAFT_ALL, value=value, block_id="digest")
    return payload


def test_the_draft_all_button_is_a_decision_naming_no_invoice() -> None:
    decision = decision_from_payload(clicked("all"))
    assert decision is not None
    assert decision.kind == "draft_all"
    assert (decision.invoice_id, decision.version) == (0, 0)
    assert decision.user_id == "U04FINANCE1" and decision.channel_id == "C0FINANCE"


@pytest.mark.parametrize("value", ['{"invoice_id":1,"version":1}', "", None, "ALL"])
def test_a_draft_all_click_with_another_value_is_a_400(value: Any) -> None:
    with pytest.raises(SlackRequestRejected) as raised:
        decision_from_payload(clicked(value))
    assert raised.value.status == 400


def test_the_button_carries_the_action_and_value_the_handler_takes() -> None:
    button = draft_all_button().to_dict()
    assert (button["action_id"], button["value"]) == ("draft_all", "all")
    assert button["text"]["text"] == "Draft all due"
    assert "confirm" in button


def test_the_summary_names_the_clients_of_each_outcome() -> None:
    report = DraftAllReport(
        (
            ClientDraft(
                "acme", "drafted", "2026-11", 1, 2, 2, Money(Decimal("360"), "EUR"), 0, True
            ),
            ClientDraft("globex", "unchanged", "2026-11", 2, 0, 1, None, 0, False),
            ClientDraft("kaiju", "skipped", "2026-11"),
            ClientDraft("qahwa", "failed", message="unknown client"),
        )
    )
    assert report.summary() == (
        "1 drafted (acme), 1 unchanged (globex), 1 skipped (kaiju), 1 failed (qahwa); "
        "1 approval request queued"
    )
    data = report.to_json()
    assert data["drafted"] == ["acme"] and data["failed"] == ["qahwa"]
    assert data["clients"][0]["total"] == "360" and data["clients"][0]["currency"] == "EUR"
    assert data["message"].startswith("Draft all due: 1 drafted (acme)")
