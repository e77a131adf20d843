"""The one ASGI app (served by uvicorn): webhooks, Slack, dashboard, health, metrics."""

from __future__ import annotations

import time

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Receive, Scope, Send

from sync.approvals import desk_for
from sync.composition import Services
from sync.metrics import WEBHOOK_LATENCY
from sync.web.board_webhooks import board_webhooks_router
from sync.web.breakdown import ledger_payload_source
from sync.web.dashboard import DashboardAuth, dashboard_router
from sync.web.dashboard_actions import InvoicingActions
from sync.web.events import ChangeBroker
from sync.web.health import health_router
from sync.web.slack_routes import slack_router
from sync.web.stripe_webhook import stripe_webhook_router

log = structlog.get_logger(__name__)


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="kanvoice", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.services = services
    broker = ChangeBroker()
    app.state.broker = broker
    app.state.notify = broker.notify
    services.engine.on_change(broker.notify)
    app.include_router(health_router(services))
    app.include_router(board_webhooks_router(services))
    app.include_router(stripe_webhook_router(services))
    app.include_router(slack_router(services))
    server = services.settings.server
    auth = DashboardAuth.for_bind(
        server.host,
        token=server.dashboard_token.get_secret_value() if server.dashboard_token else None,
        username=server.dashboard_user,
        password=server.dashboard_password.get_secret_value()
        if server.dashboard_password
        else None,
    )
    payload = ledger_payload_source(services.ledger, services.client_names(), services.clock)
    app.include_router(
        dashboard_router(payload, broker, InvoicingActions(services, desk_for(services)), auth)
    )
    app.add_middleware(WebhookTimer)

    @app.exception_handler(OperationalError)
    async def ledger_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        """The ledger is down: 503 for every route (senders retry, pages say so)."""
        log.error("ledger.unavailable", path=request.url.path)
        return JSONResponse({"error": "ledger unavailable, retry later"}, status_code=503)

    return app


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
