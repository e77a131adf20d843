"""Board webhooks: ``POST /webhooks/github`` and ``POST /webhooks/azure-devops``.

Each request is handled in this order, and nothing is written before step 4:

1. the body is streamed with a limit (`server.max_body_bytes`): larger → 413,
   without reading the rest (a larger Content-Length is refused at once);
2. the connector's parser verifies the request (GitHub: ``X-Hub-Signature-256``
   with `github.webhook_secret`; Azure DevOps: basic auth with
   `azure_devops.hook_username` / `hook_password`) before parsing it; a refusal
   answers its status with ``{"error": ...}`` (401, 413, 415, 400);
3. valid but not acted on (ping, other events, an organization or project no board
   reads) → 202 ``{"status": "ignored"}``, decided without any call to the board;
4. the delivery is written to the ledger's inbox (`sync.intake.IntakeWriter`: one
   short INSERT, off the event loop, deduped on the delivery id) and answered at
   once: 202 ``{"status": "queued"}``, or 200 ``{"status": "duplicate"}`` for a
   delivery id already in the inbox. The leader's worker re-fetches and ingests.

The ledger down, locked or hung (no commit within `INTAKE_TIMEOUT_SECONDS`) → 503
with Retry-After so the sender retries (GitHub only by hand; Azure DevOps on its
own). Secrets and bodies are never logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from connectors.azure_devops.service_hook import parse_azure_service_hook
from connectors.base import BoardConnector, WebhookRejected, WebhookTrigger
from connectors.github.webhook import parse_github_webhook
from mapping.domain import Source
from sync.boards import close_connectors, source_of
from sync.composition import Services
from sync.intake import IntakeUnavailable, IntakeWriter, candidates
from sync.ledger.store import InboxDelivery

log = structlog.get_logger(__name__)


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The raw body, streamed; `WebhookRejected(413)` as soon as it passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        declared = declared.strip()
        if not declared.isdigit():
            raise WebhookRejected(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise WebhookRejected(
                413, f"body of {int(declared)} bytes exceeds the limit of {limit} bytes"
            )
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise WebhookRejected(413, f"body exceeds the limit of {limit} bytes")
    return bytes(body)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def _ignored(reason: str) -> JSONResponse:
    return JSONResponse({"status": "ignored", "reason": reason}, status_code=202)


def board_webhooks_router(services: Services, writer: IntakeWriter | None = None) -> APIRouter:
    """The board webhook routes; connectors' HTTP clients (and the intake writer's
    thread) are closed when the app stops."""

    writer = writer or IntakeWriter(services.ledger, services.clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await asyncio.to_thread(writer.close)
            await close_connectors(services.connectors)

    router = APIRouter(lifespan=lifespan)
    limit = services.settings.server.max_body_bytes

    def of_source(source: Source) -> list[BoardConnector]:
        return [c for c in services.connectors.values() if source_of(c) is source]

    async def dispatch(
        source: Source, trigger: WebhookTrigger, connectors: list[BoardConnector]
    ) -> JSONResponse:
        where = {"source": source.value, "delivery": trigger.delivery_id}
        if trigger.ignored_reason is not None:
            log.info(
                "webhook.ignored", **where, hook_event=trigger.event, reason=trigger.ignored_reason
            )
            return _ignored(trigger.ignored_reason)
        if not connectors:
            reason = (
                f"delivery received and verified (the hook works), but no configured "
                f"{source.value} board reads {trigger.board_hint or trigger.owner or 'it'}"
            )
            log.info("webhook.ignored", **where, hook_event=trigger.event, reason=reason)
            return _ignored(reason)
        delivery = InboxDelivery(
            source=trigger.source,
            delivery_id=trigger.delivery_id,
            event=trigger.event,
            action=trigger.action,
            item_id=trigger.item_ids[0] if trigger.item_ids else None,
            board_hint=trigger.board_hint,
            revision=trigger.revision,
        )
        try:
            new = await writer.accept(delivery)
        except IntakeUnavailable as exc:
            log.error("webhook.ledger_unavailable", **where, error=str(exc))
            return _error(503, "the ledger is unavailable; retry later", {"Retry-After": "30"})
        if not new:
            return JSONResponse(
                {
                    "status": "duplicate",
                    "detail": f"delivery {trigger.delivery_id} was received before",
                },
                status_code=200,
            )
        log.debug("webhook.queued", **where, hook_event=trigger.event)
        return JSONResponse(
            {"status": "queued", "boards": [c.board_key for c in connectors]}, status_code=202
        )

    @router.post("/webhooks/github")
    async def github_webhook(request: Request) -> JSONResponse:
        """GitHub `projects_v2_item` (and `ping`) deliveries, signed with the secret."""
        secret = services.settings.github.webhook_secret
        try:
            body = await read_limited_body(request, limit)
            trigger = parse_github_webhook(
                secret.get_secret_value().encode() if secret else b"",
                request.headers,
                body,
                max_body_bytes=limit,
            )
        except WebhookRejected as exc:
            log.warning(
                "webhook.rejected",
                source="github",
                status=exc.status,
                error=str(exc),
                delivery=request.headers.get("x-github-delivery"),
            )
            return _error(exc.status, str(exc))
        connectors = candidates(of_source(Source.GITHUB), trigger.board_hint, trigger.owner)
        return await dispatch(Source.GITHUB, trigger, connectors)

    @router.post("/webhooks/azure-devops")
    async def azure_devops_webhook(request: Request) -> JSONResponse:
        """Azure DevOps `workitem.*` service hooks, with basic auth."""
        creds = services.settings.azure_devops
        password = creds.hook_password.get_secret_value() if creds.hook_password else ""
        try:
            body = await read_limited_body(request, limit)
            trigger = parse_azure_service_hook(
                creds.hook_username or "", password, request.headers, body, limit
            )
        except WebhookRejected as exc:
            log.warning(
                "webhook.rejected", source="azure_devops", status=exc.status, error=str(exc)
            )
            return _error(exc.status, str(exc))
        azure = of_source(Source.AZURE_DEVOPS)
        connectors = azure if trigger.board_hint is None else candidates(azure, trigger.board_hint)
        return await dispatch(Source.AZURE_DEVOPS, trigger, connectors)

    return router
