"""Retainers and budgets as the dashboard and `kanvoice status` show them: one reader
per client (`client_plans`) and the dashboard payload's wrapper around it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from sync.budgets import budget_view
from sync.ledger.store import Ledger
from sync.retainers import retainer_view
from sync.settings import Settings


def client_plans(
    conn: Connection, settings: Settings, clients: list[str], now: datetime
) -> dict[str, dict[str, Any]]:
    """Per client with a retainer or a budget, what the dashboard shows for it in the
    current period: ``{"retainer": {...}}`` and / or ``{"budgets": [...]}`` (the same
    shapes as `GET /api/pipeline`)."""
    plans: dict[str, dict[str, Any]] = {}
    for key in clients:
        plan: dict[str, Any] = {}
        retainer = retainer_view(conn, settings, key, now)
        if retainer is not None:
            plan["retainer"] = retainer
        budgets = budget_view(conn, settings, key, now)
        if budgets:
            plan["budgets"] = budgets
        if plan:
            plans[key] = plan
    return plans


def with_client_plans(
    get_payload: Callable[[], dict[str, Any]],
    ledger: Ledger,
    settings: Settings,
    clock: Callable[[], datetime],
) -> Callable[[], dict[str, Any]]:
    """The dashboard's payload plus `retainer` (used / included) and `budgets` (spent /
    cap, percent, thresholds reached) on each client that has them, read on one
    connection."""
    keys = [c.key for c in settings.clients if c.retainer is not None or settings.budgets(c.key)]

    def payload() -> dict[str, Any]:
        data = get_payload()
        if not keys:
            return data
        with ledger.engine.connect() as conn:
            plans = client_plans(conn, settings, keys, clock())
        for client in data.get("clients", []):
            client.update(plans.get(client.get("client"), {}))
        return data

    return payload
