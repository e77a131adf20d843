"""`POST /webhooks/stripe`: signed invoice events, stored in the inbox and answered.

Verify ``Stripe-Signature`` over the raw body (401), check the event's shape (400),
then (``invoice.*`` events only; others are answered 202 ``{"status": "ignored"}``
and not stored) one short INSERT into the ledger's inbox, deduped on the Stripe event id, and
answer 200 ``{"status": "queued"}`` (``"duplicate"`` for an event id already stored).
The leader's inbox worker applies it (`Invoicing.apply_event`) moments later. The
ledger unavailable or hung (no commit within the intake's timeout) → 503, and
Stripe retries.
"""

from __future__ import annotations

import json

import stripe
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from connectors.base import has_nul
from sync.composition import Services
from sync.intake import STRIPE_SOURCE, IntakeUnavailable, IntakeWriter
from sync.ledger.store import InboxDelivery

log = structlog.get_logger(__name__)


async def read_limited_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None once it grows past `limit` bytes (never read further)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _is_event(event: object) -> bool:
    """The shape kanvoice reads: ids are strings, `data.object` an object, no NUL."""
    if not isinstance(event, dict) or has_nul(event):
        return False
    if not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        return False
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return False
    object_id = data["object"].get("id")
    return object_id is None or isinstance(object_id, str)


def stripe_webhook_router(services: Services, writer: IntakeWriter | None = None) -> APIRouter:
    router = APIRouter()
    settings = services.settings
    intake = writer or IntakeWriter(services.ledger, services.clock)

    @router.post("/webhooks/stripe")
    async def stripe_webhook(request: Request) -> JSONResponse:
        body = await read_limited_body(request, settings.server.max_body_bytes)
        if body is None:
            return JSONResponse({"error": "body too large"}, status_code=413)
        secret = settings.stripe.webhook_secret
        if secret is None:
            log.error("stripe.webhook_secret_missing")
            return JSONResponse({"error": "stripe.webhook_secret is not configured"}, 503)
        header = request.headers.get("stripe-signature")
        if not header:
            return JSONResponse({"error": "Stripe-Signature header required"}, 401)
        try:
            stripe.WebhookSignature.verify_header(
                body.decode("utf-8", errors="replace"),
                header,
                secret.get_secret_value(),
                settings.stripe.webhook_tolerance_seconds,
            )
        except stripe.SignatureVerificationError as exc:
            log.warning("stripe.webhook_rejected", reason=str(exc))
            return JSONResponse({"error": "invalid or stale Stripe-Signature"}, 401)
        try:
            event = json.loads(body)
            if not _is_event(event):
                raise ValueError("not an event")
        except ValueError:
            return JSONResponse({"error": "malformed event"}, 400)
        if not event["type"].startswith("invoice."):
            # Not an event kanvoice acts on (the endpoint may be subscribed to more).
            return JSONResponse({"status": "ignored", "type": event["type"]}, 202)
        delivery = InboxDelivery(
            source=STRIPE_SOURCE,
            delivery_id=event["id"],
            event=event["type"],
            action="",
            body=body.decode("utf-8", errors="replace"),
        )
        try:
            new = await intake.accept(delivery)
        except IntakeUnavailable as exc:
            log.error("stripe.ledger_unavailable", event_id=event["id"], error=str(exc))
            return JSONResponse(
                {"error": "ledger unavailable, retry later"}, 503, headers={"Retry-After": "30"}
            )
        log.debug("stripe.queued", type=event["type"], event_id=event["id"], new=new)
        return JSONResponse({"status": "queued" if new else "duplicate"}, 200)

    return router
