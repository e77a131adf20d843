"""Block Kit of the approval message, the decided message and the modals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from connectors.slack.messages import (
    ACTION_ADJUST,
    ACTION_APPROVE,
    ACTION_REJECT,
    CALLBACK_ADJUST,
    CALLBACK_REJECT,
    MAX_MESSAGE_BLOCKS,
    MAX_VIEW_BLOCKS,
    DraftRef,
    adjust_modal,
    approval_blocks,
    approval_text,
    blocks_as_dicts,
    decided_blocks,
    decode_ref,
    encode_ref,
    format_money,
    format_rate,
    link,
    refusal_text,
    reject_modal,
    stale_text,
)
from connectors.slack.model import DraftLine, DraftSummary


def line(
    entry_id: int,
    title: str = "Fix login",
    hours: str = "2.5",
    rate: str | None = "95",
    amount: str | None = None,
    kind: str = "time",
    description: str = "",
) -> DraftLine:
    rate_d = Decimal(rate) if rate is not None else None
    if amount is None:
        amount = str(Decimal(hours) * rate_d) if rate_d is not None else "0"
    return DraftLine(
        entry_id=entry_id,
        title=title,
        url=f"https://github.com/acme/web/issues/{entry_id}",
        hours=Decimal(hours),
        rate=rate_d,
        amount=Decimal(amount),
        kind=kind,
        description=description,
    )


def summary(lines: tuple[DraftLine, ...], currency: str = "EUR", version: int = 3) -> DraftSummary:
    return DraftSummary(
        invoice_id=42,
        client_key="acme",
        client_name="Acme GmbH",
        period_label="November 2026",
        currency=currency,
        lines=lines,
        total=sum((ln.amount for ln in lines), Decimal(0)),
        stripe_url="https://dashboard.stripe.com/invoices/in_1Abc",
        version=version,
    )


EUR_DRAFT = summary(
    (
        line(101, "Fix login <SSO> & 2FA", "12.5", "95", description="Login fixes"),
        line(102, "Checkout redesign", "3", "110"),
        line(103, "Milestone: launch", "20", None, "5000", kind="milestone"),
        line(104, "Goodwill discount", "0", None, "-150", kind="adjustment"),
    )
)


def texts(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def actions(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for block in blocks:
        if block["type"] == "actions":
            for element in block["elements"]:
                found[element["action_id"]] = element
    return found


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("1234.5", "EUR", "1,234.50 EUR"),
        ("12000", "JPY", "12,000 JPY"),
        ("12000.5", "jpy", "12,001 JPY"),
        ("1.5", "KWD", "1.500 KWD"),
        ("-150", "EUR", "-150.00 EUR"),
        ("0.005", "EUR", "0.01 EUR"),
        ("10", "XYZ", "10.00 XYZ"),
        ("-0.001", "EUR", "0.00 EUR"),
    ],
)
def test_format_money_uses_the_currency_exponent(amount: str, currency: str, expected: str) -> None:
    assert format_money(Decimal(amount), currency) == expected


def test_format_rate_keeps_sub_unit_precision() -> None:
    assert format_rate(Decimal("95"), "EUR") == "95.00 EUR/h"
    assert format_rate(Decimal("0.125"), "EUR") == "0.125 EUR/h"
    assert format_rate(Decimal("9000"), "JPY") == "9,000 JPY/h"


def test_link_escapes_and_refuses_non_http_urls() -> None:
    assert link("https://x.test/a|b", "a <b> & c") == "<https://x.test/a%7Cb|a &lt;b&gt; &amp; c>"
    assert link("javascript:alert(1)", "t") == "t"
    assert link(None, "plain") == "plain"


def test_approval_message_lists_every_line_with_its_figures() -> None:
    blocks = blocks_as_dicts(approval_blocks(EUR_DRAFT))
    body = texts(blocks)
    assert blocks[0]["type"] == "header"
    assert "Acme GmbH" in blocks[0]["text"]["text"]
    assert "November 2026" in blocks[0]["text"]["text"]
    for entry in EUR_DRAFT.lines:
        assert entry.url in body
    assert "Fix login &lt;SSO&gt; &amp; 2FA" in body  # mrkdwn escaped
    assert "12.5 h × 95.00 EUR/h = *1,187.50 EUR*" in body
    assert "3 h × 110.00 EUR/h = *330.00 EUR*" in body
    assert "`Milestone`" in body and "Fixed price *5,000.00 EUR*" in body
    assert "`Adjustment`" in body and "*-150.00 EUR*" in body
    assert "Login fixes" in body
    assert "6,367.50 EUR" in body  # the total
    assert "https://dashboard.stripe.com/invoices/in_1Abc" in body
    assert len(blocks) <= MAX_MESSAGE_BLOCKS
    assert "6,367.50 EUR" in approval_text(EUR_DRAFT)


def test_per_person_lines_name_the_person_and_role() -> None:
    from dataclasses import replace

    alice = replace(line(201, "Checkout", "2", "160"), person="Alice Senior", role="Senior dev")
    bob = replace(line(202, "Checkout", "2", "90"), person="Bob <Junior>", role=None)
    whole = line(203, "Docs", "1", "95")
    blocks = blocks_as_dicts(approval_blocks(summary((alice, bob, whole))))
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    alice_text = next(s for s in sections if "Checkout" in s and "160" in s)
    bob_text = next(s for s in sections if "Checkout" in s and "90" in s)
    docs_text = next(s for s in sections if "Docs" in s)
    assert "Alice Senior (Senior dev)" in alice_text
    assert "Bob &lt;Junior&gt;" in bob_text and "(" not in bob_text.split("·")[1].split("\n")[0]
    assert "·" not in docs_text.split("\n")[0]
    # The Adjust modal shows the same lines: finance can tell Alice's from Bob's.
    modal = texts([adjust_modal(summary((alice, bob)), "C1", "1.1").to_dict()])
    assert "Alice Senior (Senior dev)" in modal


def test_jpy_totals_have_no_decimals() -> None:
    draft = summary((line(1, hours="7.5", rate="9000"), line(2, hours="1", rate="12001")), "JPY")
    body = texts(blocks_as_dicts(approval_blocks(draft)))
    assert "7.5 h × 9,000 JPY/h = *67,500 JPY*" in body
    assert "*Total*\\n79,501 JPY" in body
    assert "79,501.00" not in body


def test_buttons_carry_invoice_id_and_version_and_confirm_names_the_total() -> None:
    blocks = blocks_as_dicts(approval_blocks(EUR_DRAFT))
    buttons = actions(blocks)
    assert set(buttons) == {ACTION_APPROVE, ACTION_ADJUST, ACTION_REJECT}
    for element in buttons.values():
        assert json.loads(element["value"]) == {"invoice_id": 42, "version": 3}
        assert decode_ref(element["value"]) == DraftRef(42, 3)
    approve, reject = buttons[ACTION_APPROVE], buttons[ACTION_REJECT]
    assert approve["style"] == "primary"
    assert "6,367.50 EUR" in approve["confirm"]["text"]["text"]
    assert approve["confirm"]["confirm"]["text"] == "Approve"
    assert reject["style"] == "danger"
    assert reject["confirm"]["style"] == "danger"
    assert "style" not in buttons[ACTION_ADJUST]
    action_block = next(b for b in blocks if b["type"] == "actions")
    assert action_block["block_id"] == "kanvoice:42:3"


def test_a_new_version_changes_button_values_and_block_ids() -> None:
    old = blocks_as_dicts(approval_blocks(EUR_DRAFT))
    new = blocks_as_dicts(approval_blocks(summary(EUR_DRAFT.lines, version=4)))
    assert json.loads(actions(new)[ACTION_APPROVE]["value"])["version"] == 4
    old_ids = {b.get("block_id") for b in old} - {None}
    new_ids = {b.get("block_id") for b in new} - {None}
    assert not old_ids & new_ids


def test_long_drafts_are_summarised_under_the_block_limit() -> None:
    many = tuple(line(i, f"Ticket {i}", "1", "100") for i in range(1, 121))
    blocks = blocks_as_dicts(approval_blocks(summary(many)))
    assert len(blocks) <= MAX_MESSAGE_BLOCKS
    body = texts(blocks)
    assert "… and 80 more lines (8,000.00 EUR)" in body
    assert "Ticket 40" in body and "Ticket 41" not in body
    assert "12,000.00 EUR" in body


def test_decided_message_has_who_when_and_no_buttons() -> None:
    at = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    blocks = blocks_as_dicts(decided_blocks(EUR_DRAFT, "approved", "U04FINANCE1", at))
    body = texts(blocks)
    assert not [b for b in blocks if b["type"] == "actions"]
    assert "*Approved* by <@U04FINANCE1>" in body
    assert "2026-11-02 09:30 UTC" in body
    assert f"<!date^{int(at.timestamp())}^" in body
    rejected = texts(
        blocks_as_dicts(decided_blocks(EUR_DRAFT, "rejected", "alice (CLI)", at, "Wrong rate"))
    )
    assert "*Rejected* by alice (CLI)" in rejected
    assert "*Reason:* Wrong rate" in rejected


def test_adjust_modal_has_inputs_per_line_and_metadata() -> None:
    view = adjust_modal(EUR_DRAFT, "C0FINANCE", "1790000001.000001").to_dict()
    assert view["type"] == "modal"
    assert view["callback_id"] == CALLBACK_ADJUST
    assert len(view["title"]["text"]) <= 24
    assert decode_ref(view["private_metadata"]) == DraftRef(42, 3, "C0FINANCE", "1790000001.000001")
    ids = [b["block_id"] for b in view["blocks"] if b["type"] == "input"]
    assert ids[:4] == [
        "line:101:hours",
        "line:101:rate",
        "line:101:description",
        "line:101:exclude",
    ]
    # milestones / adjustments: no hours or rate to change, but description and exclude
    assert "line:103:hours" not in ids and "line:103:exclude" in ids
    assert "line:104:description" in ids
    hours = next(b for b in view["blocks"] if b.get("block_id") == "line:101:hours")
    assert hours["optional"] is True
    assert hours["element"]["type"] == "number_input"
    assert hours["element"]["placeholder"]["text"] == "now 12.5 h"


def test_adjust_modal_stays_under_the_view_block_limit() -> None:
    many = tuple(line(i, f"Ticket {i}") for i in range(1, 60))
    view = adjust_modal(summary(many)).to_dict()
    assert len(view["blocks"]) <= MAX_VIEW_BLOCKS
    assert "more lines, not shown here" in texts(view["blocks"])


def test_reject_modal_requires_a_reason() -> None:
    view = reject_modal(EUR_DRAFT, "C0FINANCE", "1.2").to_dict()
    assert view["callback_id"] == CALLBACK_REJECT
    reason = next(b for b in view["blocks"] if b["type"] == "input")
    assert reason["block_id"] == "reason"
    assert not reason.get("optional")
    assert decode_ref(view["private_metadata"]).message_ts == "1.2"


def test_ephemeral_texts() -> None:
    assert "<@U999>" in refusal_text("U999")
    assert "Nothing was changed" in refusal_text("U999")
    assert "version 2" in stale_text(EUR_DRAFT, 2) and "now version 3" in stale_text(EUR_DRAFT, 2)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"invoice_id": "42", "version": 1}',
        '{"invoice_id": 1}',
        '{"invoice_id": true, "version": 1}',
    ],
)
def test_decode_ref_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        decode_ref(text)


def test_ref_round_trip() -> None:
    ref = DraftRef(7, 0, "C1", "1.000001")
    assert decode_ref(encode_ref(ref)) == ref


@pytest.mark.parametrize(
    ("amount", "currency", "offered"),
    [("0.49", "USD", True), ("0.50", "USD", False), ("49", "JPY", True), ("2000", "KWD", False)],
)
def test_approve_below_minimum_is_offered_only_under_stripes_minimum_charge(
    amount: str, currency: str, offered: bool
) -> None:
    from connectors.slack.messages import ACTION_APPROVE_FORCE
    from connectors.slack.verify import _ACTION_KINDS

    draft = summary((line(1, hours="1", rate=amount, amount=amount),), currency=currency)
    found = actions(blocks_as_dicts(approval_blocks(draft)))
    assert ACTION_APPROVE in found
    assert (ACTION_APPROVE_FORCE in found) is offered
    if offered:
        button = found[ACTION_APPROVE_FORCE]
        assert button["value"] == found[ACTION_APPROVE]["value"]
        assert "minimum charge" in texts([button])
    assert _ACTION_KINDS[ACTION_APPROVE_FORCE] == "approve_force"
