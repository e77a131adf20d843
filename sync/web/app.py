"""The one ASGI app (served by uvicorn): webhooks, Slack, dashboard, health, metrics."""

from __future__ import annotations

from fastapi import FastAPI

from sync.composition import Services
from sync.web.board_webhooks import board_webhooks_router
from sync.web.health import health_router
from sync.web.stripe_webhook import stripe_webhook_router


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="kanvoice", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.services = services
    app.include_router(health_router(services))
    app.include_router(board_webhooks_router(services))
    app.include_router(stripe_webhook_router(services))
    return app
