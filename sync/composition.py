"""The composition root: the one place that builds the ledger, engine and services
from settings. Everything else receives what it needs (including the clock)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from connectors.base import BoardConnector
from sync.engine import Clock, Engine
from sync.ledger.store import Ledger
from sync.settings import Settings


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    settings: Settings
    ledger: Ledger
    engine: Engine
    clock: Clock
    connectors: dict[str, BoardConnector] = field(default_factory=dict)

    def client_names(self) -> dict[str, tuple[str, str]]:
        return {c.key: (c.name or c.key, c.currency) for c in self.settings.clients}

    def close(self) -> None:
        self.ledger.dispose()


def build_services(
    settings: Settings, clock: Clock = system_clock, *, migrate: bool = True
) -> Services:
    """Wire the ledger (migrated to the latest schema unless told not to) and engine."""
    ledger = Ledger(settings.ledger.url)
    if migrate:
        ledger.upgrade()
    engine = Engine(ledger, settings.board_policies(), clock)
    from sync.boards import build_connectors

    return Services(
        settings=settings,
        ledger=ledger,
        engine=engine,
        clock=clock,
        connectors=build_connectors(settings),
    )
