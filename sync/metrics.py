"""Prometheus metrics: counters updated where things happen, gauges read from the
ledger at scrape time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from sync.ledger import schema as t

ITEMS_SEEN = Counter("kanvoice_items_seen_total", "Board snapshots seen", ["board"])
EXTERNAL_CALLS = Counter(
    "kanvoice_external_calls_total", "Calls to outside services", ["service", "outcome"]
)
WEBHOOK_LATENCY = Histogram(
    "kanvoice_webhook_latency_seconds",
    "Time to answer a webhook",
    ["source"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class ExternalCalls:
    """The `connectors.base.CallObserver` of a process: counts every call to GitHub,
    Azure DevOps, Slack and Stripe in ``kanvoice_external_calls_total{service, outcome}``
    and keeps each service's latest outcome (and since when it fails) for /readyz."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str, datetime, datetime | None]] = {}

    def __call__(self, service: str, outcome: str) -> None:
        EXTERNAL_CALLS.labels(service=service, outcome=outcome).inc()
        now = self.clock()
        with self._lock:
            previous = self._last.get(service)
            failing_since = None
            if outcome != "ok":
                failing_since = previous[2] if previous and previous[2] else now
            self._last[service] = (outcome, now, failing_since)

    def status(self) -> dict[str, dict[str, str]]:
        """Per service called so far: the last outcome, when, and since when it fails."""
        with self._lock:
            last = dict(self._last)
        report: dict[str, dict[str, str]] = {}
        for service, (outcome, at, since) in sorted(last.items()):
            entry = {"last_call": outcome, "at": at.isoformat()}
            if since is not None:
                entry["failing_since"] = since.isoformat()
            report[service] = entry
        return report


class LedgerCollector(Collector):
    """Entries by state and outbox depth, read from the ledger when scraped."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        entries = GaugeMetricFamily("kanvoice_entries", "Entries by state", labels=["state"])
        outbox = GaugeMetricFamily(
            "kanvoice_outbox_depth", "Outbox rows by status", labels=["status"]
        )
        try:
            with self.engine.connect() as conn:
                for state, count in conn.execute(
                    select(t.entries.c.state, func.count()).group_by(t.entries.c.state)
                ):
                    entries.add_metric([state], count)
                for status, count in conn.execute(
                    select(t.outbox.c.status, func.count()).group_by(t.outbox.c.status)
                ):
                    outbox.add_metric([status], count)
        except SQLAlchemyError:
            return
        yield entries
        yield outbox


_registered: LedgerCollector | None = None


def register_ledger_metrics(engine: Any) -> None:
    """Point the ledger gauges at this process's ledger (once per process)."""
    global _registered
    if _registered is not None:
        _registered.engine = engine
        return
    _registered = LedgerCollector(engine)
    REGISTRY.register(_registered)
