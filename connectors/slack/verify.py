"""Authenticity of Slack requests, and interaction payloads reduced to `Decision`s.

Order of work for ``POST /slack/interactions`` (HTTP) — the raw body first:

1. `verify_slack_request` (timestamp window, then the ``v0`` HMAC-SHA256 signature
   over ``v0:{timestamp}:{raw body}``), raising `SlackRequestRejected` (401);
2. `extract_payload` (the form field ``payload=`` holding JSON), raising
   `SlackRequestRejected` (400) when malformed;
3. `decision_from_payload`: block_actions with our action ids and view_submission
   with our callback ids become a `Decision`; anything else is None (answer 200,
   do nothing). Invalid modal input raises `SlackInputInvalid`, whose
   `response_body()` is the ``{"response_action": "errors", ...}`` answer.

Socket Mode payloads arrive already authenticated (over the app-token WebSocket)
and go straight to step 3.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from connectors.base import ConnectorError, WebhookRejected, has_nul
from connectors.slack.messages import (
    ACTION_ADJUST,
    ACTION_APPROVE,
    ACTION_APPROVE_FORCE,
    ACTION_DRAFT_ALL,
    ACTION_REJECT,
    CALLBACK_ADJUST,
    CALLBACK_REJECT,
    DRAFT_ALL_VALUE,
    EXCLUDE_OPTION,
    INPUT_ACTION_ID,
    MAX_DESCRIPTION_LENGTH,
    MAX_REASON_LENGTH,
    REASON_BLOCK_ID,
    DraftRef,
    decode_ref,
)
from connectors.slack.model import Decision, DecisionKind, LineAdjustment

SIGNATURE_HEADER = "x-slack-signature"
TIMESTAMP_HEADER = "x-slack-request-timestamp"
DEFAULT_TOLERANCE = 300

MAX_HOURS = Decimal(10_000)
MAX_RATE = Decimal(1_000_000_000)
MAX_DECIMAL_PLACES = 4

_ACTION_KINDS: dict[str, DecisionKind] = {
    ACTION_APPROVE: "approve",
    ACTION_APPROVE_FORCE: "approve_force",
    ACTION_REJECT: "reject",
    ACTION_ADJUST: "adjust_open",
    ACTION_DRAFT_ALL: "draft_all",
}
_LINE_BLOCK = re.compile(r"^line:(\d{1,18}):(hours|rate|description|exclude)$")
_NUMBER = re.compile(r"^(\d+(\.\d*)?|\.\d+)$")


class SlackRequestRejected(WebhookRejected):
    """A request to the Slack endpoint that must not be acted on; `status` is the answer.

    401: missing / forged signature or a timestamp outside the window; 400: a
    signed request whose payload is malformed.
    """


class SlackInputInvalid(ConnectorError):
    """A modal submission with bad values; Slack shows `field_errors` under the inputs.

    Keys are block ids of the modal's input blocks (``line:42:hours``, ``reason``).
    """

    def __init__(self, field_errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in field_errors.items()))
        self.field_errors = dict(field_errors)

    def response_body(self) -> dict[str, Any]:
        """The JSON to answer the view_submission with (HTTP body or Socket Mode ack)."""
        return {"response_action": "errors", "errors": dict(self.field_errors)}


# --------------------------------------------------------------------------------------
# Signature
# --------------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def slack_signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    """``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` under the signing secret."""
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    digest = hmac.new(signing_secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def verify_slack_request(
    signing_secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Raise `SlackRequestRejected` (401) unless Slack signed exactly this body recently.

    The timestamp is checked first (missing, not an integer, or more than `tolerance`
    seconds away from `now` in either direction), then the signature, compared in
    constant time over the raw bytes. `headers` may be any case.
    """
    if not signing_secret:
        raise ValueError("the Slack signing secret is empty")
    raw_ts = _header(headers, TIMESTAMP_HEADER)
    if raw_ts is None or not raw_ts.strip():
        raise SlackRequestRejected(401, "missing X-Slack-Request-Timestamp header")
    raw_ts = raw_ts.strip()
    if not raw_ts.isascii() or not raw_ts.isdigit() or len(raw_ts) > 12:
        raise SlackRequestRejected(401, "X-Slack-Request-Timestamp is not a Unix time")
    if abs(now - int(raw_ts)) > tolerance:
        raise SlackRequestRejected(
            401, f"X-Slack-Request-Timestamp is outside the {tolerance} s window (replay?)"
        )
    signature = _header(headers, SIGNATURE_HEADER)
    if signature is None or not signature.strip():
        raise SlackRequestRejected(401, "missing X-Slack-Signature header")
    expected = slack_signature(signing_secret, raw_ts, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8")):
        raise SlackRequestRejected(401, "X-Slack-Signature does not match the body")


# --------------------------------------------------------------------------------------
# Payload
# --------------------------------------------------------------------------------------


def extract_payload(body: bytes, content_type: str) -> dict[str, Any]:
    """The interaction payload of a (verified) request body.

    Slack posts ``application/x-www-form-urlencoded`` with one ``payload`` field
    holding JSON; a bare JSON body is accepted too. Raises `SlackRequestRejected` (400).
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SlackRequestRejected(400, "the body is not UTF-8") from exc
    if media_type == "application/x-www-form-urlencoded":
        fields = parse_qs(text, keep_blank_values=True)
        values = fields.get("payload")
        if not values or len(values) != 1:
            raise SlackRequestRejected(400, "expected exactly one 'payload' form field")
        text = values[0]
    elif media_type != "application/json":
        raise SlackRequestRejected(400, f"unsupported content type {media_type or '(none)'!r}")
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise SlackRequestRejected(400, "the payload is not valid JSON") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise SlackRequestRejected(400, "the payload is not an interaction (no 'type')")
    if has_nul(payload):
        raise SlackRequestRejected(400, "the payload contains a NUL character")
    return payload


def parse_interaction(body: bytes, content_type: str) -> Decision | None:
    """`extract_payload` then `decision_from_payload` (call after `verify_slack_request`)."""
    return decision_from_payload(extract_payload(body, content_type))


def _dict(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SlackRequestRejected(400, f"malformed payload: {what} is not an object")
    return value


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _user(payload: Mapping[str, Any]) -> tuple[str, str, str | None]:
    user = _dict(payload.get("user"), "user")
    user_id = user.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise SlackRequestRejected(400, "malformed payload: no user id")
    name = _str_or_none(user.get("name")) or _str_or_none(user.get("username")) or user_id
    team = payload.get("team")
    team_id = _str_or_none(team.get("id")) if isinstance(team, Mapping) else None
    return user_id, name, team_id or _str_or_none(user.get("team_id"))


def _ref(text: Any, what: str) -> DraftRef:
    if not isinstance(text, str):
        raise SlackRequestRejected(400, f"malformed payload: no {what}")
    try:
        return decode_ref(text)
    except ValueError as exc:
        raise SlackRequestRejected(400, f"malformed payload: bad {what}: {exc}") from exc


def decision_from_payload(payload: Mapping[str, Any]) -> Decision | None:
    """Our button clicks and modal submits as a `Decision`; None for anything else.

    Raises `SlackRequestRejected` (400) for a malformed payload of ours and
    `SlackInputInvalid` for modal values that do not validate.
    """
    kind = payload.get("type")
    if kind == "block_actions":
        return _block_action(payload)
    if kind == "view_submission":
        return _view_submission(payload)
    return None


def _block_action(payload: Mapping[str, Any]) -> Decision | None:
    actions = payload.get("actions")
    if not isinstance(actions, list):
        raise SlackRequestRejected(400, "malformed payload: 'actions' is not a list")
    action = next(
        (a for a in actions if isinstance(a, Mapping) and a.get("action_id") in _ACTION_KINDS),
        None,
    )
    if action is None:
        return None
    kind = _ACTION_KINDS[str(action["action_id"])]
    if kind == "draft_all":
        if action.get("value") != DRAFT_ALL_VALUE:
            raise SlackRequestRejected(400, "malformed payload: bad button value")
        ref = DraftRef(0, 0)  # names no invoice
    else:
        ref = _ref(action.get("value"), "button value")
    user_id, user_name, team_id = _user(payload)
    container = payload.get("container")
    container = container if isinstance(container, Mapping) else {}
    channel = payload.get("channel")
    message = payload.get("message")
    channel_id = _str_or_none(container.get("channel_id")) or (
        _str_or_none(channel.get("id")) if isinstance(channel, Mapping) else None
    )
    message_ts = _str_or_none(container.get("message_ts")) or (
        _str_or_none(message.get("ts")) if isinstance(message, Mapping) else None
    )
    return Decision(
        kind=kind,
        invoice_id=ref.invoice_id,
        version=ref.version,
        user_id=user_id,
        user_name=user_name,
        team_id=team_id,
        channel_id=channel_id,
        message_ts=message_ts,
        response_url=_str_or_none(payload.get("response_url")),
        trigger_id=_str_or_none(payload.get("trigger_id")),
        reason=None,
        adjustments=(),
    )


def _view_submission(payload: Mapping[str, Any]) -> Decision | None:
    view = _dict(payload.get("view"), "view")
    callback_id = view.get("callback_id")
    if callback_id not in (CALLBACK_ADJUST, CALLBACK_REJECT):
        return None
    ref = _ref(view.get("private_metadata"), "private_metadata")
    state = _dict(view.get("state"), "view.state")
    values = _dict(state.get("values"), "view.state.values")
    user_id, user_name, team_id = _user(payload)
    response_url = None
    response_urls = payload.get("response_urls")
    if isinstance(response_urls, list) and response_urls:
        first = response_urls[0]
        if isinstance(first, Mapping):
            response_url = _str_or_none(first.get("response_url"))
    reason: str | None = None
    adjustments: tuple[LineAdjustment, ...] = ()
    kind: DecisionKind
    if callback_id == CALLBACK_REJECT:
        kind = "reject"
        reason = _reason(values)
    else:
        kind = "adjust_submit"
        adjustments = _adjustments(values)
    return Decision(
        kind=kind,
        invoice_id=ref.invoice_id,
        version=ref.version,
        user_id=user_id,
        user_name=user_name,
        team_id=team_id,
        channel_id=ref.channel_id,
        message_ts=ref.message_ts,
        response_url=response_url,
        trigger_id=_str_or_none(payload.get("trigger_id")),
        reason=reason,
        adjustments=adjustments,
    )


def _element(values: Mapping[str, Any], block_id: str) -> Mapping[str, Any]:
    actions = _dict(values.get(block_id), f"state of {block_id}")
    return _dict(actions.get(INPUT_ACTION_ID), f"input of {block_id}")


def _text_value(element: Mapping[str, Any], block_id: str) -> str | None:
    value = element.get("value")
    if value is None:
        return None
    if not isinstance(value, str):
        raise SlackRequestRejected(400, f"malformed payload: value of {block_id} is not text")
    return value.strip() or None


def _reason(values: Mapping[str, Any]) -> str:
    text = _text_value(_element(values, REASON_BLOCK_ID), REASON_BLOCK_ID)
    if text is None:
        raise SlackInputInvalid({REASON_BLOCK_ID: "Give a reason: it is recorded with the draft."})
    if len(text) > MAX_REASON_LENGTH:
        raise SlackInputInvalid(
            {REASON_BLOCK_ID: f"Keep the reason under {MAX_REASON_LENGTH} characters."}
        )
    return text


def _number(raw: str | None, field: str, limit: Decimal) -> tuple[Decimal | None, str | None]:
    """(value, None) or (None, error message); blank is (None, None)."""
    if raw is None:
        return None, None
    text = raw.replace(" ", "").replace("\u00a0", "")
    if text.startswith("-"):
        return None, f"The {field} cannot be negative."
    if "," in text:
        return None, "Use a dot for decimals and no thousands separator, e.g. 1250.5"
    if not _NUMBER.match(text):
        return None, f"Enter the {field} as a number, e.g. 7.5"
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None, f"Enter the {field} as a number, e.g. 7.5"
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMAL_PLACES:
        return None, f"Use at most {MAX_DECIMAL_PLACES} decimal places."
    if value > limit:
        return None, f"The {field} cannot be more than {limit:,}."
    return value, None


def _adjustments(values: Mapping[str, Any]) -> tuple[LineAdjustment, ...]:
    fields: dict[int, dict[str, Any]] = {}
    first_block: str | None = None
    errors: dict[str, str] = {}
    for block_id in values:
        match = _LINE_BLOCK.match(str(block_id))
        if not match:
            continue
        first_block = first_block or str(block_id)
        entry_id, field = int(match.group(1)), match.group(2)
        element = _element(values, block_id)
        line = fields.setdefault(entry_id, {})
        if field == "exclude":
            selected = element.get("selected_options") or []
            if not isinstance(selected, list):
                raise SlackRequestRejected(400, f"malformed payload: options of {block_id}")
            line[field] = any(
                isinstance(o, Mapping) and o.get("value") == EXCLUDE_OPTION for o in selected
            )
            continue
        raw = _text_value(element, block_id)
        if field == "description":
            if raw is not None and len(raw) > MAX_DESCRIPTION_LENGTH:
                errors[block_id] = f"Keep it under {MAX_DESCRIPTION_LENGTH} characters."
            line[field] = raw
            continue
        value, error = _number(raw, field, MAX_HOURS if field == "hours" else MAX_RATE)
        if error:
            errors[block_id] = error
        line[field] = value
    if first_block is None:
        raise SlackRequestRejected(400, "malformed payload: the Adjust modal has no line inputs")
    if errors:
        raise SlackInputInvalid(errors)
    adjustments = tuple(
        LineAdjustment(
            entry_id=entry_id,
            hours=line.get("hours"),
            rate=line.get("rate"),
            description=line.get("description"),
            exclude=bool(line.get("exclude", False)),
        )
        for entry_id, line in fields.items()
        if any(line.get(f) is not None for f in ("hours", "rate", "description"))
        or line.get("exclude")
    )
    if not adjustments:
        raise SlackInputInvalid(
            {first_block: "Nothing to change: edit a value or tick Exclude, or press Cancel."}
        )
    return adjustments
