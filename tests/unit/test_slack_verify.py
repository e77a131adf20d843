"""Slack request signatures and interaction payload parsing."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_sdk.signature import SignatureVerifier

from connectors.base import WebhookRejected
from connectors.slack.model import LineAdjustment
from connectors.slack.verify import (
    SlackInputInvalid,
    SlackRequestRejected,
    decision_from_payload,
    extract_payload,
    parse_interaction,
    slack_signature,
    verify_slack_request,
)
from tests.fakes.slack_server import signed_interaction_request

DATA = Path(__file__).resolve().parents[1] / "data" / "slack"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_790_000_100
FORM = "application/x-www-form-urlencoded"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


def form(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


# ---- signatures ----------------------------------------------------------------------


def test_good_signature_passes() -> None:
    headers, body = signed_interaction_request(SECRET, load("block_actions_approve.json"), NOW)
    verify_slack_request(SECRET, headers, body, now=NOW + 10)
    # header names in any case (Starlette lower-cases them)
    verify_slack_request(SECRET, {k.lower(): v for k, v in headers.items()}, body, now=NOW)


def test_signature_matches_slack_sdk() -> None:
    body = b"token=xyz&team_id=T1&payload=%7B%7D"
    expected = SignatureVerifier(SECRET).generate_signature(timestamp=str(NOW), body=body)
    assert slack_signature(SECRET, str(NOW), body) == expected


@pytest.mark.parametrize(
    "tamper",
    ["other secret", "body", "signature prefix", "timestamp"],
)
def test_forged_requests_are_401(tamper: str) -> None:
    headers, body = signed_interaction_request(SECRET, load("block_actions_approve.json"), NOW)
    secret = SECRET
    if tamper == "other secret":
        headers, body = signed_interaction_request("not-the-secret", json.loads("{}"), NOW)
    elif tamper == "body":
        body = body.replace(b"kanvoice_approve", b"kanvoice_reject_")
    elif tamper == "signature prefix":
        headers["X-Slack-Signature"] = "v1=" + headers["X-Slack-Signature"][3:]
    else:
        headers["X-Slack-Request-Timestamp"] = str(NOW + 1)
    with pytest.raises(SlackRequestRejected) as info:
        verify_slack_request(secret, headers, body, now=NOW)
    assert info.value.status == 401
    assert isinstance(info.value, WebhookRejected)


@pytest.mark.parametrize("missing", ["X-Slack-Signature", "X-Slack-Request-Timestamp"])
def test_missing_headers_are_401(missing: str) -> None:
    headers, body = signed_interaction_request(SECRET, {"type": "block_actions"}, NOW)
    del headers[missing]
    with pytest.raises(SlackRequestRejected, match="missing") as info:
        verify_slack_request(SECRET, headers, body, now=NOW)
    assert info.value.status == 401


@pytest.mark.parametrize("offset", [301, 3600, -301, -86400])
def test_timestamps_outside_the_window_are_401(offset: int) -> None:
    # genuinely signed, but stale (replay) or from the future
    headers, body = signed_interaction_request(SECRET, {"type": "block_actions"}, NOW)
    with pytest.raises(SlackRequestRejected, match="window") as info:
        verify_slack_request(SECRET, headers, body, now=NOW + offset)
    assert info.value.status == 401


def test_window_edge_and_custom_tolerance() -> None:
    headers, body = signed_interaction_request(SECRET, {"type": "block_actions"}, NOW)
    verify_slack_request(SECRET, headers, body, now=NOW + 300)
    verify_slack_request(SECRET, headers, body, now=NOW - 300)
    with pytest.raises(SlackRequestRejected):
        verify_slack_request(SECRET, headers, body, now=NOW + 61, tolerance=60)


def test_timestamp_is_checked_before_the_signature() -> None:
    headers = {"X-Slack-Request-Timestamp": str(NOW - 1000), "X-Slack-Signature": "v0=bad"}
    with pytest.raises(SlackRequestRejected, match="window"):
        verify_slack_request(SECRET, headers, b"payload=%7B%7D", now=NOW)


@pytest.mark.parametrize("value", ["abc", "1.5", "-5", "１２３", "9" * 20])
def test_non_integer_timestamps_are_401(value: str) -> None:
    headers = {"X-Slack-Request-Timestamp": value, "X-Slack-Signature": "v0=00"}
    with pytest.raises(SlackRequestRejected) as info:
        verify_slack_request(SECRET, headers, b"", now=NOW)
    assert info.value.status == 401


def test_non_ascii_signature_is_401_not_a_crash() -> None:
    headers = {"X-Slack-Request-Timestamp": str(NOW), "X-Slack-Signature": "v0=é"}
    with pytest.raises(SlackRequestRejected):
        verify_slack_request(SECRET, headers, b"", now=NOW)


# ---- parsing: block_actions -------------------------------------------------------------


def test_approve_click_becomes_a_decision() -> None:
    decision = parse_interaction(form(load("block_actions_approve.json")), FORM)
    assert decision is not None
    assert decision.kind == "approve"
    assert (decision.invoice_id, decision.version) == (42, 3)
    assert decision.user_id == "U04FINANCE1"
    assert decision.user_name == "maria.finance"
    assert decision.team_id == "T0KANVOICE"
    assert decision.channel_id == "C0FINANCE"
    assert decision.message_ts == "1790000001.000001"
    assert decision.response_url is not None
    assert decision.response_url.startswith("https://hooks.slack.com/actions/")
    assert decision.trigger_id is not None
    assert decision.reason is None and decision.adjustments == ()


@pytest.mark.parametrize(
    ("action_id", "kind"),
    [("kanvoice_reject", "reject"), ("kanvoice_adjust", "adjust_open")],
)
def test_reject_and_adjust_clicks(action_id: str, kind: str) -> None:
    payload = load("block_actions_approve.json")
    payload["actions"][0]["action_id"] = action_id
    decision = decision_from_payload(payload)
    assert decision is not None and decision.kind == kind
    assert decision.needs_reason is (kind == "reject")


def test_channel_and_ts_fall_back_to_channel_and_message() -> None:
    payload = load("block_actions_approve.json")
    del payload["container"]
    decision = decision_from_payload(payload)
    assert decision is not None
    assert (decision.channel_id, decision.message_ts) == ("C0FINANCE", "1790000001.000001")


def test_unknown_actions_and_types_are_ignored() -> None:
    payload = load("block_actions_approve.json")
    payload["actions"][0]["action_id"] = "someone_elses_button"
    assert decision_from_payload(payload) is None
    assert decision_from_payload({"type": "view_closed", "view": {}}) is None
    assert decision_from_payload({"type": "shortcut", "callback_id": "x"}) is None
    submission = load("view_submission_adjust.json")
    submission["view"]["callback_id"] = "other_modal"
    assert decision_from_payload(submission) is None


def test_json_body_is_accepted_too() -> None:
    decision = parse_interaction(
        json.dumps(load("block_actions_approve.json")).encode(), "application/json"
    )
    assert decision is not None and decision.kind == "approve"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"payload=not-json", FORM),
        (b"nothing=here", FORM),
        (b"payload=%7B%7D&payload=%7B%7D", FORM),
        (urlencode({"payload": "[1, 2]"}).encode(), FORM),
        (urlencode({"payload": '{"no": "type"}'}).encode(), FORM),
        (b"\xff\xfe", FORM),
        (b"{}", "text/plain"),
        (b"", ""),
    ],
)
def test_malformed_bodies_are_400(body: bytes, content_type: str) -> None:
    with pytest.raises(SlackRequestRejected) as info:
        extract_payload(body, content_type)
    assert info.value.status == 400


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.update(actions="nope"),
        lambda p: p["actions"][0].update(value="not json"),
        lambda p: p["actions"][0].update(value='{"invoice_id": -1, "version": 1}'),
        lambda p: p["actions"][0].pop("value"),
        lambda p: p.pop("user"),
        lambda p: p["user"].pop("id"),
    ],
)
def test_malformed_payloads_of_ours_are_400(mutate: Any) -> None:
    payload = copy.deepcopy(load("block_actions_approve.json"))
    mutate(payload)
    with pytest.raises(SlackRequestRejected) as info:
        decision_from_payload(payload)
    assert info.value.status == 400


# ---- parsing: view_submission ------------------------------------------------------------


def test_adjust_submission_with_hours_rate_description_and_exclude() -> None:
    decision = parse_interaction(form(load("view_submission_adjust.json")), FORM)
    assert decision is not None
    assert decision.kind == "adjust_submit"
    assert (decision.invoice_id, decision.version) == (42, 3)
    assert (decision.channel_id, decision.message_ts) == ("C0FINANCE", "1790000001.000001")
    assert decision.user_id == "U04FINANCE1"
    assert decision.adjustments == (
        LineAdjustment(101, Decimal("6.5"), None, "Login fixes (capped)", False),
        LineAdjustment(102, None, Decimal("80"), None, False),
        LineAdjustment(103, None, None, None, True),
    )  # 104: nothing changed (blank description), so not listed


def _set(payload: dict[str, Any], block_id: str, value: str | None) -> None:
    payload["view"]["state"]["values"][block_id]["value"]["value"] = value


@pytest.mark.parametrize(
    ("block_id", "value", "message"),
    [
        ("line:101:hours", "abc", "number"),
        ("line:101:hours", "-2", "negative"),
        ("line:101:hours", "1,5", "dot"),
        ("line:101:hours", "1e3", "number"),
        ("line:101:hours", "NaN", "number"),
        ("line:101:hours", "10001", "more than"),
        ("line:102:rate", "12.34567", "decimal places"),
        ("line:101:description", "x" * 501, "under 500"),
    ],
)
def test_invalid_values_become_field_errors(block_id: str, value: str, message: str) -> None:
    payload = load("view_submission_adjust.json")
    _set(payload, block_id, value)
    with pytest.raises(SlackInputInvalid) as info:
        decision_from_payload(payload)
    assert set(info.value.field_errors) == {block_id}
    assert message in info.value.field_errors[block_id]
    body = info.value.response_body()
    assert body["response_action"] == "errors"
    assert body["errors"] == info.value.field_errors


def test_every_bad_field_is_reported_at_once() -> None:
    payload = load("view_submission_adjust.json")
    _set(payload, "line:101:hours", "x")
    _set(payload, "line:102:rate", "-1")
    with pytest.raises(SlackInputInvalid) as info:
        decision_from_payload(payload)
    assert set(info.value.field_errors) == {"line:101:hours", "line:102:rate"}


def test_numbers_with_spaces_and_leading_dot_are_fine() -> None:
    payload = load("view_submission_adjust.json")
    _set(payload, "line:101:hours", " .5 ")
    _set(payload, "line:102:rate", "1 250.75")
    decision = decision_from_payload(payload)
    assert decision is not None
    assert decision.adjustments[0].hours == Decimal("0.5")
    assert decision.adjustments[1].rate == Decimal("1250.75")


def test_submitting_nothing_is_a_field_error() -> None:
    payload = load("view_submission_adjust.json")
    for actions in payload["view"]["state"]["values"].values():
        element = actions["value"]
        if element["type"] == "checkboxes":
            element["selected_options"] = []
        else:
            element["value"] = None
    with pytest.raises(SlackInputInvalid) as info:
        decision_from_payload(payload)
    assert "Nothing to change" in info.value.field_errors["line:101:hours"]


def test_bad_private_metadata_is_400() -> None:
    payload = load("view_submission_adjust.json")
    payload["view"]["private_metadata"] = "{}"
    with pytest.raises(SlackRequestRejected) as info:
        decision_from_payload(payload)
    assert info.value.status == 400


def _reject_submission(reason: str | None) -> dict[str, Any]:
    payload = load("view_submission_adjust.json")
    payload["view"]["callback_id"] = "kanvoice_reject"
    payload["view"]["state"]["values"] = {
        "reason": {"value": {"type": "plain_text_input", "value": reason}}
    }
    return payload


def test_reject_modal_submission_carries_the_reason() -> None:
    decision = decision_from_payload(_reject_submission("  Hours on #101 look doubled  "))
    assert decision is not None
    assert decision.kind == "reject"
    assert decision.reason == "Hours on #101 look doubled"
    assert not decision.needs_reason
    assert decision.message_ts == "1790000001.000001"


@pytest.mark.parametrize("reason", [None, "   "])
def test_reject_without_reason_is_a_field_error(reason: str | None) -> None:
    with pytest.raises(SlackInputInvalid) as info:
        decision_from_payload(_reject_submission(reason))
    assert set(info.value.field_errors) == {"reason"}
