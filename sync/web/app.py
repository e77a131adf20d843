"""The one ASGI app (served by uvicorn): webhooks, Slack, dashboard, health, metrics."""

from __future__ import annotations

import time
from typing import Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from sync.approvals import desk_for
from sync.composition import Services
from sync.intake import IntakeWriter
from sync.metrics import WEBHOOK_LATENCY, board_quota_rows
from sync.plans import with_client_plans
from sync.web.board_webhooks import board_webhooks_router
from sync.web.breakdown import ledger_payload_source
from sync.web.dashboard import DashboardAuth, access_note, dashboard_router
from sync.web.dashboard_actions import InvoicingActions
from sync.web.events import ChangeBroker
from sync.web.health import health_router
from sync.web.profitability import ledger_profit_source, profitability_router
from sync.web.slack_routes import slack_router
from sync.web.stripe_webhook import stripe_webhook_router

log = structlog.get_logger(__name__)


def create_app(services: Services) -> FastAPI:
    # No public API description: `/openapi.json` is served below to dashboard users only
    # (the route map is nobody else's business); no /docs or /redoc at all.
    app = FastAPI(title="kanvoice", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    broker = ChangeBroker()
    app.state.broker = broker
    app.state.notify = broker.notify
    services.engine.on_change(broker.notify)
    app.include_router(health_router(services))
    # One intake writer for every webhook route: one thread, group commits.
    writer = IntakeWriter(services.ledger, services.clock)
    app.include_router(board_webhooks_router(services, writer))
    app.include_router(stripe_webhook_router(services, writer))
    app.include_router(slack_router(services, writer=writer))
    server = services.settings.server
    auth = DashboardAuth.for_bind(
        server.host,
        token=server.dashboard_token.get_secret_value() if server.dashboard_token else None,
        username=server.dashboard_user,
        password=server.dashboard_password.get_secret_value()
        if server.dashboard_password
        else None,
    )
    payload = with_client_plans(
        ledger_payload_source(
            services.ledger,
            services.client_names(),
            services.clock,
            services.settings.finance.timezone,
        ),
        services.ledger,
        services.settings,
        services.clock,
    )
    actions = InvoicingActions(services, desk_for(services))
    app.include_router(
        dashboard_router(
            payload,
            broker,
            actions,
            auth,
            review=actions,
            quota_source=lambda: board_quota_rows(services.connectors),
        )
    )
    app.include_router(
        profitability_router(
            ledger_profit_source(services.ledger, services.clock), services.settings.staff(), auth
        )
    )
    @app.get(
        "/openapi.json", include_in_schema=False, dependencies=[Depends(auth.require_user())]
    )
    async def openapi() -> JSONResponse:
        """The API description, for those who may use the dashboard."""
        return JSONResponse(app.openapi())

    level, note = access_note(server)
    getattr(log, level)("dashboard.access", note=note)
    app.add_middleware(WebhookTimer)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, exc: StarletteHTTPException) -> Response:
        """Every refusal (401, 403, 404, 409, ...) as FastAPI answers it, logged once."""
        if exc.status_code >= 400:
            log.warning(
                "http.refused",
                method=request.method,
                path=request.url.path[:200],
                status=exc.status_code,
                error=str(exc.detail)[:300],
            )
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A body or parameter of the wrong shape: 422 with one message naming the field."""
        message = "; ".join(_describe(error) for error in exc.errors()[:5]) or "invalid request"
        log.warning(
            "http.invalid_request",
            method=request.method,
            path=request.url.path[:200],
            status=422,
            error=message[:300],
        )
        return JSONResponse({"detail": message}, status_code=422)

    @app.exception_handler(OperationalError)
    async def ledger_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        """The ledger is down: 503 for every route (senders retry, pages say so)."""
        log.error("ledger.unavailable", path=request.url.path)
        return JSONResponse({"error": "ledger unavailable, retry later"}, status_code=503)

    return app


def _describe(error: Any) -> str:
    """`body.reason: Input should be a valid string` from one pydantic error."""
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg"))


class WebhookTimer:
    """Times every webhook and Slack interaction into the latency histogram."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(("/webhooks/", "/slack/")):
            await self.app(scope, receive, send)
            return
        source = path.rstrip("/").rsplit("/", 1)[-1]
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            WEBHOOK_LATENCY.labels(source=source).observe(time.perf_counter() - started)
