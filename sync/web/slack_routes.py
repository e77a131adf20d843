"""`POST /slack/interactions`: Approve / Adjust / Reject clicks and modal submits.

Order of work, each step before the next:

1. the raw body, at most ``server.max_body_bytes`` (413);
2. `verify_slack_request` over that raw body: ``X-Slack-Request-Timestamp`` within
   300 s and ``X-Slack-Signature`` (401), before anything is parsed;
3. the payload (400 when malformed; modal values that do not validate are a 200
   ``{"response_action": "errors", ...}`` so Slack shows them under the inputs;
   anything that is not one of our actions is an empty 200);
4. `ApprovalDesk.decide`: authorization and the ledger change, in the request (fast;
   Stripe work only queued in the outbox). The ledger unavailable → 503;
5. the answer, then `ApprovalDesk.follow_up` as a background task: ephemeral notices,
   modals, message updates (Slack wants the answer within 3 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from connectors.slack import SlackInputInvalid, SlackRequestRejected
from connectors.slack.verify import parse_interaction, verify_slack_request
from sync.approvals import ApprovalDesk, desk_for
from sync.composition import Services
from sync.web.stripe_webhook import read_limited_body

log = structlog.get_logger(__name__)


def slack_router(
    services: Services,
    desk: ApprovalDesk | None = None,
    *,
    now: Callable[[], float] = time.time,
) -> APIRouter:
    """The Slack interactions route; `desk` defaults to `desk_for(services)`.

    `now` (Unix seconds) is the clock of the signature's 300 s window: the wall
    clock, not the ledger's, because Slack stamps requests with real time.
    """
    router = APIRouter()
    settings = services.settings
    the_desk = desk or desk_for(services)

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
            decision = parse_interaction(body, request.headers.get("content-type", ""))
        except SlackRequestRejected as exc:
            log.warning("slack.payload_rejected", reason=str(exc))
            return JSONResponse({"error": str(exc)}, exc.status)
        except SlackInputInvalid as exc:
            return JSONResponse(exc.response_body())
        if decision is None:
            return Response(status_code=200)
        try:
            reply = await the_desk.decide(decision)
        except SQLAlchemyError as exc:
            log.error("slack.ledger_unavailable", error=str(exc))
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
