"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from sync.composition import Services
from sync.metrics import board_quotas, register_board_quota_metrics, register_ledger_metrics


def health_router(services: Services) -> APIRouter:
    router = APIRouter()
    register_ledger_metrics(services.ledger.engine)
    register_board_quota_metrics(services.connectors)

    @router.get("/healthz")
    def healthz(request: Request) -> dict[str, Any]:
        """The process answers; `leader` says whether it runs the scheduled work."""
        leader = getattr(request.app.state, "leader", None)
        quotas = {
            board: {
                "resource": q.resource,
                "remaining": q.remaining,
                "limit": q.limit,
                "reset_at": q.reset_at,
                "retry_after": q.retry_after,
                "delay": q.delay,
            }
            for board, q in board_quotas(services.connectors).items()
        }
        return {"status": "ok", "leader": bool(leader and leader.is_leader), "board_quota": quotas}

    @router.get("/readyz")
    def readyz(response: Response) -> dict[str, str]:
        """The ledger answers: only then can webhooks be taken."""
        try:
            with services.ledger.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            response.status_code = 503
            return {"status": "ledger unavailable"}
        return {"status": "ready"}

    @router.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
