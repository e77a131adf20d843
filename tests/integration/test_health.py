"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient

from sync.composition import build_services
from sync.settings import Settings
from sync.web.app import create_app
from tests.builders import snap
from tests.conftest import FixedClock


def test_health_ready_and_metrics(sqlite_url: str, clock: FixedClock) -> None:
    settings = Settings(
        ledger={"url": sqlite_url},  # type: ignore[arg-type]
        clients=[
            {
                "key": "acme",
                "stripe_customer_id": "cus_A1",
                "currency": "EUR",  # type: ignore[list-item]
                "rate": "100",
            }
        ],
        boards=[{"key": "web", "source": "file", "client": "acme"}],  # type: ignore[list-item]
    )
    services = build_services(settings, clock)
    services.engine.ingest([snap("Done", "2", 1), snap("In progress", "1", 1, item_id="8")])
    with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
        assert client.get("/healthz").json() == {"status": "ok", "leader": False, "board_quota": {}}
        assert client.get("/readyz").json() == {"status": "ready"}
        metrics = client.get("/metrics").text
        assert 'kanvoice_items_seen_total{board="web"}' in metrics
        assert 'kanvoice_entries{state="ready"} 1.0' in metrics
        assert 'kanvoice_entries{state="in_progress"} 1.0' in metrics
        client.post("/webhooks/stripe", content=b"{}")
        assert (
            'kanvoice_webhook_latency_seconds_count{source="stripe"}' in client.get("/metrics").text
        )
    services.ledger.engine.dispose()
    services.ledger.url = "sqlite:////nonexistent/dir/x.db"
    from sync.ledger.store import make_engine

    services.ledger.engine = make_engine(services.ledger.url)
    with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
        assert client.get("/readyz").status_code == 503
    services.close()
