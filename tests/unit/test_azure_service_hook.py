"""Azure DevOps service hook verification and parsing."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from connectors.azure_devops import AzureBoardConfig, AzureDevOpsConnector, parse_azure_service_hook
from connectors.base import WebhookRejected

DATA = Path(__file__).resolve().parents[1] / "data" / "azure_devops"
USER = "kanvoice"
PASSWORD = "correct horse battery staple"


def body_of(name: str) -> bytes:
    return (DATA / name).read_bytes()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def headers(**overrides: str) -> dict[str, str]:
    values = {
        "Content-Type": "application/json; charset=utf-8",
        "Authorization": basic(USER, PASSWORD),
    }
    values.update(overrides)
    return values


def parse(hdrs: dict[str, str], body: bytes, **kwargs: Any) -> Any:
    return parse_azure_service_hook(USER, PASSWORD, hdrs, body, **kwargs)


@pytest.mark.parametrize(
    ("fixture", "event", "item_id", "rev"),
    [
        ("hook_workitem_updated.json", "workitem.updated", "301", 8),
        ("hook_workitem_created.json", "workitem.created", "305", 1),
        ("hook_workitem_deleted.json", "workitem.deleted", "302", 3),
        ("hook_workitem_restored.json", "workitem.restored", "302", 3),
    ],
)
def test_work_item_events_become_triggers(fixture: str, event: str, item_id: str, rev: int) -> None:
    trigger = parse(headers(), body_of(fixture))
    assert trigger.source == "azure_devops"
    assert trigger.event == event
    assert trigger.action == event.split(".")[1]
    assert trigger.item_ids == (item_id,)
    assert trigger.delivery_id == json.loads(body_of(fixture))["id"]  # the notification's
    assert trigger.revision == rev
    assert trigger.board_hint == "Fabrikam-Fiber"
    assert trigger.ignored_reason is None


def test_replayed_delivery_has_the_same_id() -> None:
    first = parse(headers(), body_of("hook_workitem_updated.json"))
    again = parse(headers(), body_of("hook_workitem_updated.json"))
    assert first.delivery_id == again.delivery_id == "27646e0e-b520-4d2b-9411-bba7524947cd"


def test_deleted_and_restored_at_one_revision_are_two_deliveries() -> None:
    deleted = parse(headers(), body_of("hook_workitem_deleted.json"))
    restored = parse(headers(), body_of("hook_workitem_restored.json"))
    assert (deleted.item_ids, deleted.revision) == (restored.item_ids, restored.revision)
    assert deleted.delivery_id != restored.delivery_id


def test_without_a_notification_id_the_delivery_names_event_item_and_revision() -> None:
    payload = json.loads(body_of("hook_workitem_deleted.json"))
    del payload["id"]
    assert parse(headers(), json.dumps(payload).encode()).delivery_id == "workitem.deleted:302:3"
    payload["eventType"] = "workitem.restored"
    assert parse(headers(), json.dumps(payload).encode()).delivery_id == "workitem.restored:302:3"


def test_microsofts_sample_with_work_item_id_zero_reads_revision_id() -> None:
    """The documented `workitem.updated` sample (what the dialog's Test button sends)."""
    payload = json.loads(body_of("hook_workitem_updated.json"))
    payload["resource"]["workItemId"] = 0
    payload["resource"]["revision"]["id"] = 5
    trigger = parse(headers(), json.dumps(payload).encode())
    assert trigger.item_ids == ("5",)
    assert trigger.revision == 8


def test_rev_read_from_revision_when_resource_has_none() -> None:
    payload = json.loads(body_of("hook_workitem_updated.json"))
    del payload["resource"]["rev"]
    payload["resource"]["revision"]["rev"] = 11
    trigger = parse(headers(), json.dumps(payload).encode())
    assert trigger.revision == 11


def test_header_names_are_case_insensitive() -> None:
    lowered = {k.lower(): v for k, v in headers().items()}
    assert parse(lowered, body_of("hook_workitem_updated.json")).item_ids == ("301",)


def test_unknown_event_is_ignored() -> None:
    trigger = parse(headers(), body_of("hook_workitem_commented.json"))
    assert trigger.ignored_reason is not None
    assert "workitem.commented" in trigger.ignored_reason
    assert trigger.item_ids == ()
    assert trigger.delivery_id == "event:fb2617ed-60df-4518-81fa-749faa6c5cd6"


def test_wrong_password_is_401() -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse(headers(Authorization=basic(USER, "wrong")), body_of("hook_workitem_updated.json"))
    assert caught.value.status == 401


def test_wrong_user_is_401() -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse(
            headers(Authorization=basic("admin", PASSWORD)), body_of("hook_workitem_updated.json")
        )
    assert caught.value.status == 401


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer abc",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"x").decode(),
    ],
)
def test_missing_or_malformed_auth_is_401(authorization: str) -> None:
    hdrs = headers()
    if authorization:
        hdrs["Authorization"] = authorization
    else:
        del hdrs["Authorization"]
    with pytest.raises(WebhookRejected) as caught:
        parse(hdrs, body_of("hook_workitem_updated.json"))
    assert caught.value.status == 401


def test_auth_is_checked_before_the_body_is_parsed() -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse(headers(Authorization=basic(USER, "nope")), b"{not json")
    assert caught.value.status == 401


def test_unconfigured_password_refuses_everything() -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse_azure_service_hook("", "", headers(Authorization=basic("", "")), b"{}")
    assert caught.value.status == 401


def test_malformed_json_is_400() -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse(headers(), b'{"eventType": "workitem.updated", ')
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"resource": {"workItemId": 1, "rev": 2}},
        {"eventType": "workitem.updated"},
        {"eventType": "workitem.updated", "resource": {"rev": 2}},
        {"eventType": "workitem.updated", "resource": {"workItemId": "abc", "rev": 2}},
        {"eventType": "workitem.updated", "resource": {"workItemId": True, "rev": 2}},
        {"eventType": "workitem.updated", "resource": {"workItemId": 3}},
        {"eventType": "workitem.created", "resource": {"workItemId": 3, "rev": 1}},
        {"eventType": "workitem.deleted", "resource": {"id": 3, "rev": -1}},
    ],
)
def test_missing_fields_are_400(payload: Any) -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse(headers(), json.dumps(payload).encode())
    assert caught.value.status == 400


def test_wrong_content_type_is_415() -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse(
            headers(**{"Content-Type": "application/x-www-form-urlencoded"}),
            body_of("hook_workitem_updated.json"),
        )
    assert caught.value.status == 415


def test_oversize_body_is_413() -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse(headers(), b"{" + b" " * 2_000 + b"}", max_body_bytes=1_000)
    assert caught.value.status == 413
    with pytest.raises(WebhookRejected) as caught:
        parse(headers(**{"Content-Length": "5000000"}), b"{}")
    assert caught.value.status == 413


def test_connector_delegates_with_its_configured_credentials() -> None:
    cfg = AzureBoardConfig(
        board_key="web",
        organization_url="https://dev.azure.com/fabrikam",
        project="Fabrikam-Fiber",
        pat="pat",
        hook_username=USER,
        hook_password=PASSWORD,
    )
    connector = AzureDevOpsConnector(cfg)
    trigger = connector.parse_webhook(headers(), body_of("hook_workitem_updated.json"))
    assert (trigger.item_ids, trigger.revision) == (("301",), 8)
    with pytest.raises(WebhookRejected) as caught:
        connector.parse_webhook(
            headers(Authorization=basic(USER, "x")), body_of("hook_workitem_updated.json")
        )
    assert caught.value.status == 401
    assert "correct horse" not in repr(cfg)
