"""Verify and parse an Azure DevOps service hook (Web Hooks consumer) delivery.

Checks run in this order and nothing is parsed before authentication:

1. body size (413),
2. HTTP basic auth, user name and password both compared in constant time (401),
3. JSON content type (415),
4. JSON body with the fields the event needs (400).

``workitem.updated`` / ``created`` / ``deleted`` / ``restored`` become a trigger to
re-fetch the work item. The delivery id is the notification's own ``id`` (a GUID,
the same on a retry of that notification), so created / deleted / restored of one
item at one revision are three deliveries; a body without one falls back to
``"{event}:{work item id}:{rev}"``. Other event types are valid but ignored.

``workitem.updated`` names the work item in ``resource.workItemId``, except in
Microsoft's documented sample, which is what the subscription dialog's **Test**
button sends: there ``workItemId`` is 0 and the id is ``resource.revision.id``.
Both are accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from connectors.base import WebhookRejected, WebhookTrigger, has_nul
from mapping.domain import Source

SOURCE = Source.AZURE_DEVOPS.value
WORK_ITEM_EVENTS = frozenset(
    {"workitem.updated", "workitem.created", "workitem.deleted", "workitem.restored"}
)


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _check_basic_auth(
    expected_username: str, expected_password: str, authorization: str | None
) -> None:
    if not expected_password:
        raise WebhookRejected(401, "Azure DevOps service hook credentials are not configured")
    if not authorization:
        raise WebhookRejected(401, "basic authentication required")
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise WebhookRejected(401, "basic authentication required")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected(401, "malformed basic authentication") from None
    user, sep, password = decoded.partition(b":")
    if not sep:
        raise WebhookRejected(401, "malformed basic authentication")
    user_ok = hmac.compare_digest(user, expected_username.encode("utf-8"))
    password_ok = hmac.compare_digest(password, expected_password.encode("utf-8"))
    if not (user_ok & password_ok):
        raise WebhookRejected(401, "invalid service hook credentials")


#: Work item ids and revisions are 32-bit integers in Azure DevOps.
MAX_ID = 2**31 - 1


def _positive_int(value: Any) -> int | None:
    """A work item id or revision: 1 to `MAX_ID`, as a JSON number or digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, int) and 0 < value <= MAX_ID:
        return value
    return None


def _project_name(resource: Mapping[str, Any]) -> str | None:
    for holder in (resource.get("revision"), resource):
        if isinstance(holder, Mapping):
            fields = holder.get("fields")
            if isinstance(fields, Mapping):
                project = fields.get("System.TeamProject")
                if isinstance(project, str) and project:
                    return project
    return None


def parse_azure_service_hook(
    expected_username: str,
    expected_password: str,
    headers: Mapping[str, str],
    body: bytes,
    max_body_bytes: int = 1_000_000,
) -> WebhookTrigger:
    """Verify one service hook delivery and reduce it to the work item to re-fetch.

    Raises `WebhookRejected` with the HTTP status to answer (413, 401, 415, 400).
    """
    lowered = _lower_headers(headers)
    declared = lowered.get("content-length", "").strip()
    if len(body) > max_body_bytes or (declared.isdigit() and int(declared) > max_body_bytes):
        raise WebhookRejected(413, f"body larger than {max_body_bytes} bytes")
    _check_basic_auth(expected_username, expected_password, lowered.get("authorization"))

    media_type = lowered.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise WebhookRejected(415, "expected Content-Type: application/json")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected(400, "body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "body is not a JSON object")
    if has_nul(payload):
        raise WebhookRejected(400, "body contains a NUL character")
    event_type = payload.get("eventType")
    if not isinstance(event_type, str) or not event_type:
        raise WebhookRejected(400, "missing 'eventType'")

    if event_type not in WORK_ITEM_EVENTS:
        notification_id = payload.get("id")
        delivery = (
            notification_id
            if isinstance(notification_id, str) and notification_id
            else hashlib.sha256(body).hexdigest()
        )
        return WebhookTrigger(
            source=SOURCE,
            delivery_id=f"event:{delivery}",
            event=event_type,
            action="",
            board_hint=None,
            item_ids=(),
            ignored_reason=f"event type {event_type!r} is not acted on",
        )

    resource = payload.get("resource")
    if not isinstance(resource, dict):
        raise WebhookRejected(400, f"{event_type}: missing 'resource' object")
    action = event_type.split(".", 1)[1]
    revision = resource.get("revision")
    revision = revision if isinstance(revision, dict) else {}
    if event_type == "workitem.updated":
        # Only the Test button's 0 (or no workItemId at all) falls back to the revision's
        # id; any other value must itself be a valid id.
        named = resource.get("workItemId")
        fallback = named is None or (named == 0 and not isinstance(named, bool))
        item_id = _positive_int(revision.get("id")) if fallback else _positive_int(named)
        where = "resource.workItemId' or 'resource.revision.id"
    else:
        item_id = _positive_int(resource.get("id"))
        where = "resource.id"
    if item_id is None:
        raise WebhookRejected(400, f"{event_type}: missing or invalid '{where}'")
    rev = _positive_int(resource.get("rev")) or _positive_int(revision.get("rev"))
    if rev is None:
        raise WebhookRejected(400, f"{event_type}: missing or invalid 'resource.rev'")
    notification_id = payload.get("id")
    delivery = (
        notification_id.strip()
        if isinstance(notification_id, str) and notification_id.strip()
        else f"{event_type}:{item_id}:{rev}"
    )
    return WebhookTrigger(
        source=SOURCE,
        delivery_id=delivery,
        event=event_type,
        action=action,
        board_hint=_project_name(resource),
        item_ids=(str(item_id),),
        revision=rev,
    )
