"""GitHub webhook verification and parsing (projects_v2_item and ping)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from connectors.base import WebhookRejected
from connectors.github.webhook import (
    ITEM_ACTIONS,
    field_value_change,
    parse_github_webhook,
    sign_body,
    verify_signature,
)
from tests.fakes.github_server import FakeGitHubProject

DATA = Path(__file__).resolve().parents[1] / "data" / "github"
SECRET = b"It's a Secret to Everybody"
ITEM_ID = "PVTI_lADOBXAqR84AkX3Mzgaq1bE"
PROJECT_ID = "PVT_kwDOBXAqR84AkX3M"


def _body(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _headers(
    body: bytes,
    *,
    event: str = "projects_v2_item",
    delivery: str | None = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    secret: bytes = SECRET,
    content_type: str = "application/json",
    signature: str | None = None,
) -> dict[str, str]:
    headers = {
        "Content-Type": content_type,
        "X-GitHub-Event": event,
        "X-Hub-Signature-256": signature or sign_body(secret, body),
        "User-Agent": "GitHub-Hookshot/2f1c7a3",
        "X-GitHub-Hook-ID": "498765432",
    }
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return headers


def _rejected(headers: dict[str, str], body: bytes, **kwargs: Any) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as info:
        parse_github_webhook(SECRET, headers, body, **kwargs)
    return info.value


# -- signature -------------------------------------------------------------------------


def test_signature_matches_github_documented_example() -> None:
    # The example from GitHub's "Validating webhook deliveries" page.
    body = b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign_body(SECRET, body) == expected
    assert verify_signature(SECRET, body, expected)


def test_verify_signature_refuses_everything_else() -> None:
    body = b'{"a":1}'
    good = sign_body(SECRET, body)
    assert verify_signature(SECRET, body, good)
    assert not verify_signature(SECRET, body, None)
    assert not verify_signature(SECRET, body, "")
    assert not verify_signature(SECRET, body + b" ", good)
    assert not verify_signature(b"other", body, good)
    assert not verify_signature(SECRET, body, good.replace("sha256=", "sha1="))
    assert not verify_signature(SECRET, body, good[7:])  # no prefix
    assert not verify_signature(SECRET, body, good[:-1] + "é")
    assert not verify_signature(
        b"", body, "sha256=" + hmac.new(b"", body, hashlib.sha256).hexdigest()
    )


# -- the seven actions -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "webhook_created.json",
        "webhook_edited.json",
        "webhook_edited_legacy.json",
        "webhook_edited_number.json",
        "webhook_archived.json",
        "webhook_restored.json",
        "webhook_converted.json",
        "webhook_deleted.json",
        "webhook_reordered.json",
    ],
)
def test_item_actions_become_triggers(name: str) -> None:
    body = _body(name)
    trigger = parse_github_webhook(SECRET, _headers(body), body)
    assert trigger.source == "github"
    assert trigger.event == "projects_v2_item"
    assert trigger.action == json.loads(body)["action"]
    assert trigger.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert trigger.item_ids == (ITEM_ID,)
    assert trigger.board_hint == PROJECT_ID
    assert trigger.ignored_reason is None


def test_all_seven_actions_are_covered_by_fixtures() -> None:
    seen = {json.loads(p.read_bytes()).get("action") for p in DATA.glob("webhook_*.json")}
    assert seen >= ITEM_ACTIONS


def test_deleted_is_still_a_trigger() -> None:
    body = _body("webhook_deleted.json")
    trigger = parse_github_webhook(SECRET, _headers(body), body)
    assert trigger.item_ids == (ITEM_ID,)  # the re-fetch will find nothing


def test_current_field_value_form() -> None:
    change = field_value_change(json.loads(_body("webhook_edited.json")))
    assert change is not None
    assert change.is_detailed
    assert change.field_node_id == "PVTSSF_lADOBXAqR84AkX3MzgcT8Y4"
    assert change.field_type == "single_select"
    assert change.field_name == "Status"
    assert change.project_number == 7
    assert change.from_value["name"] == "In Progress"
    assert change.to_value["name"] == "Done"
    number = field_value_change(json.loads(_body("webhook_edited_number.json")))
    assert number is not None
    assert (number.field_name, number.from_value, number.to_value) == ("Hours", 2.5, 4.25)


def test_older_field_value_form() -> None:
    change = field_value_change(json.loads(_body("webhook_edited_legacy.json")))
    assert change is not None
    assert not change.is_detailed
    assert change.field_node_id == "PVTSSF_lADOBXAqR84AkX3MzgcT8Y4"
    assert change.field_type == "single_select"
    assert change.field_name is None
    assert change.project_number is None
    assert change.from_value is None and change.to_value is None


def test_other_changes_have_no_field_value() -> None:
    assert field_value_change(json.loads(_body("webhook_converted.json"))) is None
    assert field_value_change({"changes": "nonsense"}) is None
    assert field_value_change({}) is None


def test_odd_changes_do_not_reject_the_trigger() -> None:
    payload = json.loads(_body("webhook_edited.json"))
    payload["changes"] = {"field_value": ["unexpected"]}
    body = json.dumps(payload).encode()
    assert parse_github_webhook(SECRET, _headers(body), body).item_ids == (ITEM_ID,)


# -- ping and ignored events -----------------------------------------------------------


def test_ping_is_answered_and_ignored() -> None:
    body = _body("webhook_ping.json")
    trigger = parse_github_webhook(SECRET, _headers(body, event="ping"), body)
    assert trigger.ignored_reason == "ping"
    assert trigger.item_ids == ()
    assert trigger.event == "ping"


def test_unknown_event_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    body = json.dumps({"action": "opened", "issue": {"number": 1}}).encode()
    with caplog.at_level(logging.INFO, logger="connectors.github.webhook"):
        trigger = parse_github_webhook(SECRET, _headers(body, event="issues"), body)
    assert trigger.ignored_reason is not None and "issues" in trigger.ignored_reason
    assert trigger.item_ids == ()
    assert trigger.action == "opened"
    assert "ignored" in caplog.text


def test_unknown_action_is_ignored() -> None:
    payload = json.loads(_body("webhook_created.json"))
    payload["action"] = "unfurled"
    body = json.dumps(payload).encode()
    trigger = parse_github_webhook(SECRET, _headers(body), body)
    assert trigger.ignored_reason is not None and "unfurled" in trigger.ignored_reason
    assert trigger.item_ids == ()
    assert trigger.board_hint == PROJECT_ID


# -- rejections ------------------------------------------------------------------------


def test_forged_signature_is_401() -> None:
    body = _body("webhook_edited.json")
    forged = sign_body(b"guess", body)
    assert _rejected(_headers(body, signature=forged), body).status == 401


def test_tampered_body_is_401() -> None:
    body = _body("webhook_edited.json")
    headers = _headers(body)
    tampered = body.replace(b"Done", b"Paid")
    assert _rejected(headers, tampered).status == 401


def test_missing_signature_is_401() -> None:
    body = _body("webhook_edited.json")
    headers = _headers(body)
    del headers["X-Hub-Signature-256"]
    error = _rejected(headers, body)
    assert error.status == 401
    assert "missing" in str(error)


def test_sha1_signature_alone_is_401() -> None:
    body = _body("webhook_edited.json")
    headers = _headers(body)
    del headers["X-Hub-Signature-256"]
    headers["X-Hub-Signature"] = "sha1=" + hmac.new(SECRET, body, hashlib.sha1).hexdigest()
    assert _rejected(headers, body).status == 401


def test_no_configured_secret_is_401() -> None:
    body = _body("webhook_edited.json")
    with pytest.raises(WebhookRejected) as info:
        parse_github_webhook(b"", _headers(body), body)
    assert info.value.status == 401


def test_form_encoded_content_type_is_415_with_a_hint() -> None:
    body = b"payload=" + _body("webhook_edited.json")
    error = _rejected(_headers(body, content_type="application/x-www-form-urlencoded"), body)
    assert error.status == 415
    assert "application/json" in str(error)


@pytest.mark.parametrize("content_type", ["text/plain", ""])
def test_other_content_types_are_415(content_type: str) -> None:
    body = _body("webhook_edited.json")
    assert _rejected(_headers(body, content_type=content_type), body).status == 415


def test_json_with_charset_is_accepted() -> None:
    body = _body("webhook_edited.json")
    headers = _headers(body, content_type="application/json; charset=utf-8")
    assert parse_github_webhook(SECRET, headers, body).item_ids == (ITEM_ID,)


def test_five_megabyte_body_is_413_before_anything_else() -> None:
    body = b"{" + b" " * (5 * 1024 * 1024) + b"}"
    assert _rejected(_headers(body), body).status == 413
    # even unsigned: the size is checked first
    assert _rejected({"Content-Type": "application/json"}, body).status == 413


def test_custom_body_limit() -> None:
    body = _body("webhook_edited.json")
    assert _rejected(_headers(body), body, max_body_bytes=100).status == 413


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b"\xff\xfe", b""],
)
def test_malformed_json_is_400(body: bytes) -> None:
    assert _rejected(_headers(body), body).status == 400


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("action"), "action"),
        (lambda p: p.pop("projects_v2_item"), "projects_v2_item"),
        (lambda p: p["projects_v2_item"].pop("node_id"), "node_id"),
        (lambda p: p["projects_v2_item"].update(node_id=""), "node_id"),
        (lambda p: p["projects_v2_item"].update(node_id=12), "node_id"),
    ],
)
def test_missing_fields_are_400(mutate: Any, message: str) -> None:
    payload = json.loads(_body("webhook_edited.json"))
    mutate(payload)
    body = json.dumps(payload).encode()
    error = _rejected(_headers(body), body)
    assert error.status == 400
    assert message in str(error)


def test_missing_delivery_id_is_400() -> None:
    body = _body("webhook_edited.json")
    error = _rejected(_headers(body, delivery=None), body)
    assert error.status == 400
    assert "X-GitHub-Delivery" in str(error)


def test_missing_event_is_400() -> None:
    body = _body("webhook_edited.json")
    headers = _headers(body)
    del headers["X-GitHub-Event"]
    assert _rejected(headers, body).status == 400


def test_signature_is_checked_before_content_type_and_json() -> None:
    body = b"{not json"
    headers = _headers(body, content_type="text/plain", signature="sha256=" + "0" * 64)
    assert _rejected(headers, body).status == 401


def test_headers_are_case_insensitive() -> None:
    body = _body("webhook_created.json")
    headers = {k.lower(): v for k, v in _headers(body).items()}
    assert parse_github_webhook(SECRET, headers, body).item_ids == (ITEM_ID,)
    upper = {k.upper(): v for k, v in _headers(body).items()}
    assert parse_github_webhook(SECRET, upper, body).item_ids == (ITEM_ID,)


def test_fake_server_payloads_parse() -> None:
    project = FakeGitHubProject(owner="acme")
    item = project.add_issue("x", status="In Progress")
    for detailed in (True, False):
        payload = project.webhook_payload(
            item.node_id,
            "edited",
            changes=project.status_change("In Progress", "Done", detailed=detailed),
        )
        body = json.dumps(payload).encode()
        trigger = parse_github_webhook(SECRET, _headers(body), body)
        assert trigger.item_ids == (item.node_id,)
        assert trigger.board_hint == project.project_id
        change = field_value_change(payload)
        assert change is not None and change.is_detailed is detailed
