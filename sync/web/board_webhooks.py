"""Board webhooks: ``POST /webhooks/github`` and ``POST /webhooks/azure-devops``.

Each request is handled in this order, and nothing is written before step 4:

1. the body is streamed with a limit (`server.max_body_bytes`): larger → 413,
   without reading the rest (a larger Content-Length is refused at once);
2. the connector's parser verifies the request (GitHub: ``X-Hub-Signature-256``
   with `github.webhook_secret`; Azure DevOps: basic auth with
   `azure_devops.hook_username` / `hook_password`) before parsing it; a refusal
   answers its status with ``{"error": ...}`` (401, 413, 415, 400);
3. valid but not acted on (ping, other events, no configured board) → 202;
4. `handle_trigger`: duplicate → 200 ``{"status": "duplicate"}``; otherwise re-fetch
   and ingest → 200 with the counts.

Failures: ledger unreachable (OperationalError) or a retriable board error → 503 so
the sender retries (GitHub only retries by hand; Azure DevOps retries on its own);
a fatal board error (credentials, permissions) → 500 with the message, logged.
Secrets and bodies are never logged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from connectors.azure_devops.service_hook import parse_azure_service_hook
from connectors.base import (
    BoardConnector,
    FatalError,
    RetriableError,
    WebhookRejected,
    WebhookTrigger,
)
from connectors.github.webhook import parse_github_webhook
from mapping.domain import Source
from sync.boards import close_connectors, handle_trigger, source_of
from sync.composition import Services

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


def _candidates(connectors: list[BoardConnector], hint: str | None) -> list[BoardConnector]:
    """Boards the hint names; if none is known to match, those that might."""
    answers = [(c, _matches(c, hint)) for c in connectors]
    sure = [c for c, answer in answers if answer is True]
    if sure:
        return sure
    return [c for c, answer in answers if answer is None]


def _matches(connector: BoardConnector, hint: str | None) -> bool | None:
    matches = getattr(connector, "matches_board_hint", None)
    if matches is None:
        return None
    answer = matches(hint)
    return answer if isinstance(answer, bool) else None


def board_webhooks_router(services: Services) -> APIRouter:
    """The board webhook routes; connectors' HTTP clients are closed when the app stops."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
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
            reason = f"no configured {source.value} board matches {trigger.board_hint or 'it'}"
            log.info("webhook.ignored", **where, hook_event=trigger.event, reason=reason)
            return _ignored(reason)
        try:
            report = await handle_trigger(services, connectors, trigger)
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else exc.__class__.__name__
            log.error("webhook.ledger_unavailable", **where, error=reason)
            return _error(503, "the ledger is unavailable; retry later", {"Retry-After": "30"})
        except RetriableError as exc:
            log.warning("webhook.refetch_failed", **where, error=str(exc))
            headers = (
                {"Retry-After": str(max(1, round(exc.retry_after)))}
                if exc.retry_after is not None
                else {"Retry-After": "60"}
            )
            return _error(503, f"could not re-fetch the item, retry later: {exc}", headers)
        except FatalError as exc:
            log.error("webhook.refetch_fatal", **where, error=str(exc))
            return _error(500, f"cannot re-fetch the item: {exc}")
        body: dict[str, Any] = {"status": report.status, "boards": list(report.boards)}
        if report.detail:
            body["detail"] = report.detail
        if report.status == "processed":
            body.update(report.as_dict())
        return JSONResponse(body, status_code=200)

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
        connectors = _candidates(of_source(Source.GITHUB), trigger.board_hint)
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
        connectors = azure if trigger.board_hint is None else _candidates(azure, trigger.board_hint)
        return await dispatch(Source.AZURE_DEVOPS, trigger, connectors)

    return router
