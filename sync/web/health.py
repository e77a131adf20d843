"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from sync.composition import Services
from sync.metrics import board_quotas, register_board_quota_metrics, register_ledger_metrics


def readiness(services: Services) -> tuple[bool, dict[str, Any]]:
    """Whether this instance can take work, and the body /readyz answers with.

    The ledger is the one dependency an instance cannot work without: it must answer a
    read and commit a write (a full disk or a read-only database fails the write while
    reads go on). The outside services are reported by the outcome of their latest call
    (`ExternalCalls`): a board or Stripe being down does not stop this instance from
    taking webhooks (they wait in the inbox and the outbox), so it stays ready.
    """
    ledger = "ok"
    try:
        with services.ledger.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        ledger = f"cannot be read: {_first_line(exc)}"
    else:
        problem = services.ledger.write_problem(services.clock())
        if problem is not None:
            ledger = f"cannot be written: {problem}"
    calls = services.calls.status()
    body: dict[str, Any] = {"status": "ready" if ledger == "ok" else "unavailable"}
    if ledger != "ok":
        body["down"] = {"ledger": ledger}
    body["checks"] = {"ledger": ledger}
    failing = sorted(name for name, call in calls.items() if call["last_call"] != "ok")
    if failing:
        body["failing"] = failing
    body["services"] = calls
    return ledger == "ok", body


def _first_line(exc: SQLAlchemyError) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


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
    def readyz(response: Response) -> dict[str, Any]:
        """503 naming the dependency when the ledger cannot be read or written."""
        ready, body = readiness(services)
        if not ready:
            response.status_code = 503
        return body

    @router.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
