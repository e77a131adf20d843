"""`kanvoice demo`: the whole flow offline on an embedded SQLite ledger and a simulated
board whose tickets move and log hours over about a minute."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from connectors.simulated import SimulatedBoard, demo_scripts
from sync.composition import build_services
from sync.pipeline import client_pipelines
from sync.settings import Settings

DEMO_START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
STEP_SECONDS = 5.0


def demo_settings(ledger_url: str) -> Settings:
    """Three clients in EUR, USD and JPY, each with one simulated board."""
    data: dict[str, Any] = {
        "ledger": {"url": ledger_url},
        "defaults": {"rate": "100", "rounding": {"increment_minutes": 15, "mode": "up"}},
        "clients": [
            {
                "key": "acme",
                "name": "Acme GmbH",
                "stripe_customer_id": "cus_DemoAcme",
                "currency": "EUR",
                "rate": "120.00",
                "rate_rules": [{"label": "senior", "rate": "150.00"}],
            },
            {
                "key": "globex",
                "name": "Globex Corporation",
                "stripe_customer_id": "cus_DemoGlobex",
                "currency": "USD",
                "rate": "140.00",
                "rounding": {"increment_minutes": 6, "mode": "nearest"},
                "cadence": "weekly",
            },
            {
                "key": "kaiju",
                "name": "Kaiju K.K.",
                "stripe_customer_id": "cus_DemoKaiju",
                "currency": "JPY",
                "rate": "15000",
                "rounding": {"increment_minutes": 30, "mode": "up"},
            },
        ],
        "boards": [
            {"key": "acme-web", "source": "simulated", "client": "acme"},
            {"key": "globex-platform", "source": "simulated", "client": "globex"},
            {"key": "kaiju-app", "source": "simulated", "client": "kaiju"},
        ],
    }
    return Settings(**data)


def run_demo(console: Console, *, fast: bool, config: Path | None = None) -> None:
    from sync.cli import render_status

    with tempfile.TemporaryDirectory(prefix="kanvoice-demo-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        settings = demo_settings(url)
        services = build_services(settings)
        boards = [
            SimulatedBoard(script, DEMO_START, timedelta(hours=4)) for script in demo_scripts()
        ]
        last = max(b.script.last_step for b in boards)
        console.print(
            f"[bold]kanvoice demo[/]: {len(boards)} simulated boards, ledger {url}",
            highlight=False,
        )
        try:
            for step in range(last + 1):
                snapshots = [s for b in boards for s in b.snapshots_at(step)]
                report = services.engine.ingest(snapshots)
                for line in report.changes:
                    console.print(f"  step {step:>2}: {line}", highlight=False)
                if not fast:
                    time.sleep(STEP_SECONDS)
            with services.ledger.unit_of_work(services.clock()) as uow:
                table = render_status(client_pipelines(uow, services.client_names()))
            Console(soft_wrap=True, width=max(console.width, 160)).print(table)
        finally:
            services.close()
