"""`POST /slack/interactions`: Approve / Adjust / Reject clicks and modal submits.

Order of work, each step before the next:

1. the raw body, at most ``server.max_body_bytes`` (413);
2. `verify_slack_request` over that raw body: ``X-Slack-Request-Timestamp`` within
   300 s and ``X-Slack-Signature`` (401), before anything is parsed;
3. the payload (400 when malformed; modal values that do not validate are a 200
   ``{"response_action": "errors", ...}`` so Slack shows them under the inputs;
   anything that is not one of our actions is an empty 200);
4. decisions that move money (Approve, Approve anyway, Reject with its reason) are
   written to the ledger's inbox (one short INSERT, deduped on the interaction: the
   clicked action's ``action_ts``, or the submitted view's id and trigger id) and answered
   with an empty 200 at once; the leader's inbox worker applies them through
   `ApprovalDesk.decide` (approver check, audit, Stripe work queued in the outbox) and
   `follow_up` (ephemeral notices; the approval message is updated through the
   outbox). The inbox not written within `SLACK_INTAKE_SECONDS` → 503, inside
   Slack's 3 s;
5. the rest stays in the request, because Slack needs its answer there and none of
   it moves money: the Adjust and Reject buttons open a modal with the click's
   ``trigger_id`` (valid 3 s), and the Adjust modal's submit answers its validation
   errors under the inputs (``response_action: errors``); its changes to the draft
   lines are only queued in the outbox. `ApprovalDesk.decide` runs in the request,
   then `follow_up` as a background task. The ledger unavailable → 503.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from connectors.slack import Decision, SlackInputInvalid, SlackRequestRejected
from connectors.slack.verify import decision_from_payload, extract_payload, verify_slack_request
from sync.approvals import ApprovalDesk, desk_for
from sync.composition import Services
from sync.intake import SLACK_SOURCE, IntakeUnavailable, IntakeWriter
from sync.ledger.store import InboxDelivery
from sync.web.stripe_webhook import read_limited_body

log = structlog.get_logger(__name__)

#: How long a Slack interaction waits for its inbox commit (Slack gives up at 3 s).
SLACK_INTAKE_SECONDS = 2.0
#: How long a modal's decision (in the request) may take before a 503.
SLACK_DECIDE_SECONDS = 2.5


def queued_through_inbox(decision: Decision) -> bool:
    """Decisions that move money go through the inbox; modals stay in the request."""
    if decision.kind in ("approve", "approve_force"):
        return True
    return decision.kind == "reject" and decision.reason is not None


def interaction_id(payload: Mapping[str, Any]) -> str:
    """The dedupe key of one interaction: Slack sends each click / submit once, with an
    ``action_ts`` (buttons) or a view id and hash (modals) of its own."""
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, Mapping) else None
    actions = payload.get("actions")
    if isinstance(actions, list) and actions and isinstance(actions[0], Mapping):
        action_ts = actions[0].get("action_ts")
        if isinstance(action_ts, str) and action_ts:
            return f"action:{user_id}:{action_ts}"
    view = payload.get("view")
    if isinstance(view, Mapping) and isinstance(view.get("id"), str):
        # Each submit carries a trigger id of its own; a second submit of the same view
        # is a new interaction (the desk answers it "already rejected").
        return f"view:{view['id']}:{payload.get('trigger_id') or view.get('hash')}"
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"sha256:{digest}"


def slack_router(
    services: Services,
    desk: ApprovalDesk | None = None,
    *,
    now: Callable[[], float] = time.time,
    writer: IntakeWriter | None = None,
) -> APIRouter:
    """The Slack interactions route; `desk` defaults to `desk_for(services)`.

    `now` (Unix seconds) is the clock of the signature's 300 s window: the wall
    clock, not the ledger's, because Slack stamps requests with real time.
    """
    router = APIRouter()
    settings = services.settings
    the_desk = desk or desk_for(services)
    intake = writer or IntakeWriter(services.ledger, services.clock)

    @router.post("/slack/interactions")
    async def slack_interactions(request: Request, background: BackgroundTasks) -> Response:
        body = await read_limited_body(request, settings.server.max_body_bytes)
        if body is None:
            return JSONResponse({"error": "body too large"}, status_code=413)
        secret = settings.slack.signing_secret
        if secret is None:
            log.error("slack.signing_secret_missing")
            return JSONResponse({"error": "slack.signing_secret is not configured"}, 503)
        try:
            verify_slack_request(secret.get_secret_value(), request.headers, body, now())
        except SlackRequestRejected as exc:
            log.warning("slack.request_rejected", reason=str(exc))
            return JSONResponse({"error": str(exc)}, exc.status)
        try:
            payload = extract_payload(body, request.headers.get("content-type", ""))
            decision = decision_from_payload(payload)
        except SlackRequestRejected as exc:
            log.warning("slack.payload_rejected", reason=str(exc))
            return JSONResponse({"error": str(exc)}, exc.status)
        except SlackInputInvalid as exc:
            return JSONResponse(exc.response_body())
        if decision is None:
            return Response(status_code=200)
        if queued_through_inbox(decision):
            delivery = InboxDelivery(
                source=SLACK_SOURCE,
                delivery_id=interaction_id(payload),
                event=decision.kind,
                action=str(decision.invoice_id),
                body=json.dumps(payload),
            )
            try:
                new = await intake.accept(delivery, wait=SLACK_INTAKE_SECONDS)
            except IntakeUnavailable as exc:
                log.error("slack.ledger_unavailable", error=str(exc))
                return JSONResponse({"error": "ledger unavailable, retry later"}, 503)
            log.info(
                "slack.queued",
                kind=decision.kind,
                invoice=decision.invoice_id,
                user=decision.user_id,
                duplicate=not new,
            )
            return Response(status_code=200)
        try:
            # Bounded: a hung ledger must not hold the answer past Slack's 3 s.
            reply = await asyncio.wait_for(the_desk.decide(decision), SLACK_DECIDE_SECONDS)
        except (SQLAlchemyError, TimeoutError) as exc:
            log.error("slack.ledger_unavailable", error=str(exc) or "no answer in time")
            return JSONResponse({"error": "ledger unavailable, retry later"}, 503)
        log.info(
            "slack.interaction",
            kind=decision.kind,
            invoice=decision.invoice_id,
            user=decision.user_id,
            outcome=reply.outcome,
        )
        if reply.has_follow_up:
            background.add_task(the_desk.follow_up, reply)
        if reply.body is not None:
            return JSONResponse(reply.body)
        return Response(status_code=200)

    return router
