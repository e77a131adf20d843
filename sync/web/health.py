"""Liveness, readiness and Prometheus metrics.

`/healthz` is liveness: it never touches the ledger and runs on the event loop, so it
answers at once while the ledger hangs (a stopped PostgreSQL, a held SQLite lock).
`/readyz` and `/metrics` read the ledger in a worker thread with a deadline
(`READY_SECONDS`, `METRICS_SECONDS`): a ledger that does not answer in time is reported
unready (503) instead of hanging the probe, and one probe at a time runs against the
ledger (a probe that arrives while the previous one still waits shares its answer), so
a hung ledger never piles up threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from sync.composition import Services
from sync.ledger.status import ping
from sync.metrics import (
    board_quotas,
    inbox_age_seconds,
    register_board_quota_metrics,
    register_ledger_metrics,
)

#: /readyz answers within about this long, ledger or not.
READY_SECONDS = 3.0
#: /metrics gives up on the ledger's gauges after this long (503).
METRICS_SECONDS = 5.0

_T = TypeVar("_T")


class _SingleFlight:
    """Run `fn` in a thread; callers while it runs share its result. `run` waits at
    most `seconds` (TimeoutError), the thread finishes on its own."""

    def __init__(self) -> None:
        self._running: asyncio.Future[Any] | None = None

    async def run(self, fn: Callable[[], _T], seconds: float) -> _T:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(asyncio.to_thread(fn))
        result: _T = await asyncio.wait_for(asyncio.shield(self._running), seconds)
        return result


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
            ping(conn)
    except SQLAlchemyError as exc:
        ledger = f"cannot be read: {_first_line(exc)}"
    else:
        problem = services.ledger.write_problem(services.clock())
        if problem is not None:
            ledger = f"cannot be written: {problem}"
    inbox: dict[str, Any] | None = None
    if ledger == "ok":
        try:
            with services.ledger.read(services.clock()) as uow:
                pending, oldest = uow.inbox_backlog()
            inbox = {
                "pending": pending,
                "oldest_pending_seconds": round(inbox_age_seconds(oldest, services.clock), 1),
            }
        except SQLAlchemyError as exc:
            ledger = f"cannot be read: {_first_line(exc)}"
    return _body(services, ledger, inbox)


def _body(
    services: Services, ledger: str, inbox: dict[str, Any] | None
) -> tuple[bool, dict[str, Any]]:
    calls = services.calls.status()
    body: dict[str, Any] = {"status": "ready" if ledger == "ok" else "unavailable"}
    if ledger != "ok":
        body["down"] = {"ledger": ledger}
    body["checks"] = {"ledger": ledger}
    if inbox is not None:
        body["inbox"] = inbox
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
    register_ledger_metrics(services.ledger.engine, services.clock)
    register_board_quota_metrics(services.connectors)
    ready_probe, metrics_probe = _SingleFlight(), _SingleFlight()

    @router.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        """The process answers (no ledger read); `leader`: this instance's worker leads."""
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
    async def readyz() -> JSONResponse:
        """503 naming the dependency when the ledger cannot be read or written, or does
        not answer within `READY_SECONDS`; the inbox backlog when it can."""
        try:
            ready, body = await ready_probe.run(lambda: readiness(services), READY_SECONDS)
        except TimeoutError:
            ready, body = _body(
                services, f"did not answer within {READY_SECONDS:g} s (hung or unreachable)", None
            )
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        try:
            payload = await metrics_probe.run(generate_latest, METRICS_SECONDS)
        except TimeoutError:
            return Response(
                f"# the ledger did not answer within {METRICS_SECONDS:g} s\n",
                status_code=503,
                media_type="text/plain",
            )
        return Response(payload, media_type=CONTENT_TYPE_LATEST)

    return router
