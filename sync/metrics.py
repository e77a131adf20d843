"""Prometheus metrics: counters updated where things happen, gauges read from the
ledger at scrape time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from connectors.base import QuotaObservation
from sync.ledger import status

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
INBOX_WRITE = Histogram(
    "kanvoice_inbox_write_seconds",
    "Time a verified webhook waits for its inbox commit (write lock wait included)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
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

    def __init__(self, engine: Engine, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        entries = GaugeMetricFamily("kanvoice_entries", "Entries by state", labels=["state"])
        pending = GaugeMetricFamily(
            "kanvoice_inbox_pending", "Webhook deliveries received and not yet processed"
        )
        oldest = GaugeMetricFamily(
            "kanvoice_inbox_oldest_pending_seconds",
            "Age of the oldest unprocessed webhook delivery (0: none pending)",
        )
        outbox = GaugeMetricFamily(
            "kanvoice_outbox_depth", "Outbox rows by status", labels=["status"]
        )
        try:
            with self.engine.connect() as conn:
                for state, count in status.entries_by_state(conn).items():
                    entries.add_metric([state], count)
                for name, count in status.outbox_by_status(conn).items():
                    outbox.add_metric([name], count)
                backlog = status.inbox_pending(conn)
        except SQLAlchemyError:
            return
        pending.add_metric([], backlog.count)
        oldest.add_metric([], inbox_age_seconds(backlog.oldest, self.clock))
        yield entries
        yield outbox
        yield pending
        yield oldest


def inbox_age_seconds(
    received_at: datetime | None, clock: Callable[[], datetime] | None = None
) -> float:
    """Seconds since `received_at` (SQLite hands back naive UTC), 0 for None."""
    if received_at is None:
        return 0.0
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    now = clock() if clock is not None else datetime.now(UTC)
    return max(0.0, (now - received_at).total_seconds())


_registered: LedgerCollector | None = None


def register_ledger_metrics(engine: Engine, clock: Callable[[], datetime] | None = None) -> None:
    """Point the ledger gauges at this process's ledger (once per process)."""
    global _registered
    if _registered is not None:
        _registered.engine = engine
        _registered.clock = clock
        return
    _registered = LedgerCollector(engine, clock)
    REGISTRY.register(_registered)


class BoardQuotaCollector(Collector):
    """Each board API's last quota report (GitHub points, Azure TSTUs), at scrape time."""

    def __init__(self, connectors: Mapping[str, Any]) -> None:
        self.connectors = connectors

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["board", "resource"]
        remaining = GaugeMetricFamily(
            "kanvoice_board_quota_remaining",
            "Board API quota left as last reported (GitHub points, Azure TSTUs)",
            labels=labels,
        )
        limit = GaugeMetricFamily(
            "kanvoice_board_quota_limit", "Board API quota size as last reported", labels=labels
        )
        retry_after = GaugeMetricFamily(
            "kanvoice_board_retry_after_seconds",
            "Retry-After / X-RateLimit-Delay last asked by the board API",
            labels=labels,
        )
        for board, quota in board_quotas(self.connectors).items():
            key = [board, quota.resource]
            if quota.remaining is not None:
                remaining.add_metric(key, quota.remaining)
            if quota.limit is not None:
                limit.add_metric(key, quota.limit)
            wait = max(quota.retry_after or 0.0, quota.delay or 0.0)
            retry_after.add_metric(key, wait)
        yield remaining
        yield limit
        yield retry_after


def board_quotas(connectors: Mapping[str, Any]) -> dict[str, QuotaObservation]:
    """The boards whose connector has reported a quota, by board key."""
    out: dict[str, QuotaObservation] = {}
    for board, connector in connectors.items():
        quota = getattr(connector, "quota", None)
        if isinstance(quota, QuotaObservation):
            out[board] = quota
    return out


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def board_quota_rows(connectors: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per polled board for the dashboard: the board API's last quota report
    (`reported` False when it sent none: Azure DevOps only sends its headers when a
    request is delayed or near the limit) and the requests made in the last hour.

    `{"board", "source", "reported", "resource", "remaining", "limit", "reset_at",
    "retry_after", "observed_at", "calls_last_hour"}`; times are ISO 8601 UTC, figures
    numbers or None."""
    rows: list[dict[str, Any]] = []
    for board, connector in sorted(connectors.items()):
        count = getattr(connector, "calls_last_hour", None)
        if not callable(count):
            continue  # not a polled board (simulated, file)
        source = getattr(connector, "source", None)
        row: dict[str, Any] = {
            "board": board,
            "source": str(getattr(source, "value", source or "")),
            "reported": False,
            "resource": None,
            "remaining": None,
            "limit": None,
            "reset_at": None,
            "retry_after": None,
            "observed_at": None,
            "calls_last_hour": int(count()),
        }
        quota = getattr(connector, "quota", None)
        if isinstance(quota, QuotaObservation):
            row.update(
                reported=True,
                resource=quota.resource,
                remaining=quota.remaining,
                limit=quota.limit,
                reset_at=_iso(quota.reset_at),
                retry_after=max(quota.retry_after or 0.0, quota.delay or 0.0) or None,
                observed_at=_iso(quota.observed_at) if quota.observed_at else None,
            )
        rows.append(row)
    return rows


_quota_collector: BoardQuotaCollector | None = None


def register_board_quota_metrics(connectors: Mapping[str, Any]) -> None:
    """Point the quota gauges at this process's connectors (once per process)."""
    global _quota_collector
    if _quota_collector is not None:
        _quota_collector.connectors = connectors
        return
    _quota_collector = BoardQuotaCollector(connectors)
    REGISTRY.register(_quota_collector)
