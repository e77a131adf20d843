"""GitHub webhook verification and parsing: `projects_v2_item` and `ping`.

A webhook is a trigger, never billing data: the result names the ProjectV2Item node
ids to re-fetch with `node(id:)`, so webhooks and polling share one path. Checks run
in this order, each with its own HTTP answer (raised as `WebhookRejected`):

1. body larger than `max_body_bytes` → 413 (nothing else is looked at);
2. ``X-Hub-Signature-256`` missing or not the HMAC-SHA256 of the raw body → 401
   (before any parsing; constant-time comparison);
3. content type other than ``application/json`` → 415 (GitHub can be set to send
   ``application/x-www-form-urlencoded``; the message says how to fix that);
4. ``X-GitHub-Delivery`` or ``X-GitHub-Event`` missing → 400;
5. body not a JSON object, or a handled action without ``projects_v2_item.node_id``
   → 400.

`ping` and unhandled events/actions give a trigger with `ignored_reason` set and no
item ids. The ``deleted`` action is still a trigger: its re-fetch finds nothing (the
connector's `fetch` omits items that no longer exist).

``changes.field_value`` comes in two forms: the current one (``field_node_id``,
``field_type``, ``field_name``, ``project_number``, ``from``, ``to``) and the older
one (``field_node_id`` and ``field_type`` only). Both are accepted and only logged:
billing always reads the re-fetched item.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.base import WebhookRejected, WebhookTrigger, has_nul
from mapping.domain import Source

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-hub-signature-256"
EVENT_HEADER = "x-github-event"
DELIVERY_HEADER = "x-github-delivery"
ITEM_EVENT = "projects_v2_item"
#: `projects_v2_item` actions that trigger a re-fetch of the item.
ITEM_ACTIONS = frozenset(
    {"created", "edited", "archived", "restored", "converted", "deleted", "reordered"}
)
DEFAULT_MAX_BODY_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class FieldValueChange:
    """`changes.field_value` of an `edited` event (current or older form), for logs.

    `field_name`, `project_number`, `from_value` and `to_value` are None in the older
    form. `from_value`/`to_value` are as GitHub sent them (an option object for a single
    select, a number, an iteration object, a string or null).
    """

    field_node_id: str | None
    field_type: str | None
    field_name: str | None = None
    project_number: int | None = None
    from_value: Any = None
    to_value: Any = None

    @property
    def is_detailed(self) -> bool:
        """True for the current form, which names the field and carries from/to."""
        return self.field_name is not None


def sign_body(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for `body` (``sha256=<hex>``)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """True if `header` is ``sha256=`` + the HMAC-SHA256 of the raw `body` with `secret`.

    An empty secret verifies nothing (always False). Comparison is constant-time.
    """
    if not secret or header is None:
        return False
    expected = sign_body(secret, body).encode("ascii")
    try:
        given = header.strip().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected, given)


def field_value_change(payload: Mapping[str, Any]) -> FieldValueChange | None:
    """`changes.field_value` in either form, None if absent or not an object."""
    changes = payload.get("changes")
    if not isinstance(changes, dict):
        return None
    value = changes.get("field_value")
    if not isinstance(value, dict):
        return None
    number = value.get("project_number")
    name = value.get("field_name")
    node_id = value.get("field_node_id")
    field_type = value.get("field_type")
    return FieldValueChange(
        field_node_id=node_id if isinstance(node_id, str) else None,
        field_type=field_type if isinstance(field_type, str) else None,
        field_name=name if isinstance(name, str) else None,
        project_number=number if isinstance(number, int) and not isinstance(number, bool) else None,
        from_value=value.get("from"),
        to_value=value.get("to"),
    )


_NODE_ID = re.compile(r"[A-Za-z0-9_=+/-]{1,200}")


def _is_node_id(value: object) -> bool:
    """A GitHub GraphQL node id (``PVTI_lADO…``, or the older base64 form)."""
    return isinstance(value, str) and _NODE_ID.fullmatch(value) is not None


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): v for k, v in headers.items()}


def parse_github_webhook(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> WebhookTrigger:
    """Verify and parse one GitHub webhook delivery; raise `WebhookRejected` if bad."""
    if len(body) > max_body_bytes:
        raise WebhookRejected(
            413, f"webhook body of {len(body)} bytes exceeds the limit of {max_body_bytes}"
        )
    if not secret:
        raise WebhookRejected(401, "no GitHub webhook secret is configured; refusing the delivery")
    h = _lower_headers(headers)
    signature = h.get(SIGNATURE_HEADER)
    if signature is None:
        raise WebhookRejected(401, "missing X-Hub-Signature-256 header")
    if not verify_signature(secret, body, signature):
        raise WebhookRejected(401, "X-Hub-Signature-256 does not match the body")

    content_type = h.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        hint = (
            "; set the webhook's content type to application/json in GitHub"
            if content_type == "application/x-www-form-urlencoded"
            else ""
        )
        raise WebhookRejected(
            415, f"content type {content_type or '(none)'!r} is not application/json{hint}"
        )

    delivery_id = h.get(DELIVERY_HEADER, "").strip()
    if not delivery_id:
        raise WebhookRejected(400, "missing X-GitHub-Delivery header")
    event = h.get(EVENT_HEADER, "").strip()
    if not event:
        raise WebhookRejected(400, "missing X-GitHub-Event header")

    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookRejected(400, f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "body is not a JSON object")
    if has_nul(payload):
        raise WebhookRejected(400, "body contains a NUL character")

    source = Source.GITHUB.value
    raw_action = payload.get("action")
    action = raw_action if isinstance(raw_action, str) else ""

    if event == "ping":
        return WebhookTrigger(
            source=source,
            delivery_id=delivery_id,
            event=event,
            action=action,
            board_hint=None,
            item_ids=(),
            ignored_reason="ping",
        )
    if event != ITEM_EVENT:
        log.info("github webhook %s: event %r ignored", delivery_id, event)
        return WebhookTrigger(
            source=source,
            delivery_id=delivery_id,
            event=event,
            action=action,
            board_hint=None,
            item_ids=(),
            ignored_reason=f"event {event!r} is not handled",
        )
    if not isinstance(raw_action, str) or not raw_action:
        raise WebhookRejected(400, "projects_v2_item payload has no action")
    item = payload.get("projects_v2_item")
    project_hint: str | None = None
    if isinstance(item, dict) and _is_node_id(item.get("project_node_id")):
        project_hint = item["project_node_id"]
    organization = payload.get("organization")
    owner = (
        organization["login"]
        if isinstance(organization, dict) and isinstance(organization.get("login"), str)
        else None
    )
    if action not in ITEM_ACTIONS:
        log.info("github webhook %s: projects_v2_item action %r ignored", delivery_id, action)
        return WebhookTrigger(
            source=source,
            delivery_id=delivery_id,
            event=event,
            action=action,
            board_hint=project_hint,
            item_ids=(),
            ignored_reason=f"projects_v2_item action {action!r} is not handled",
            owner=owner,
        )
    if not isinstance(item, dict):
        raise WebhookRejected(400, "projects_v2_item payload has no projects_v2_item object")
    node_id = item.get("node_id")
    if not isinstance(node_id, str) or not node_id.strip():
        raise WebhookRejected(400, "projects_v2_item payload has no projects_v2_item.node_id")
    if not _is_node_id(node_id.strip()):
        raise WebhookRejected(
            400, "projects_v2_item.node_id is not a GitHub node id (letters, digits, _ and -)"
        )

    change = field_value_change(payload)
    if change is not None:
        log.debug(
            "github webhook %s: item %s field %s (%s) changed%s",
            delivery_id,
            node_id,
            change.field_name or change.field_node_id,
            change.field_type,
            f" from {change.from_value!r} to {change.to_value!r}" if change.is_detailed else "",
        )
    return WebhookTrigger(
        source=source,
        delivery_id=delivery_id,
        event=event,
        action=action,
        board_hint=project_hint,
        item_ids=(node_id.strip(),),
        owner=owner,
    )
