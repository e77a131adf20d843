"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from sync.composition import build_services
from sync.settings import Settings
from sync.web.app import create_app
from tests.builders import snap
from tests.conftest import FixedClock
from tests.ledger_support import dump


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
    before = dump(sqlite_url)
    with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
        assert client.get("/healthz").json() == {"status": "ok", "leader": False, "board_quota": {}}
        assert client.get("/readyz").json() == {
            "status": "ready",
            "checks": {"ledger": "ok"},
            "inbox": {"pending": 0, "oldest_pending_seconds": 0.0},
            "services": {},
        }
        assert dump(sqlite_url) == before  # the write probe leaves no trace
        metrics = client.get("/metrics").text
        assert "kanvoice_inbox_pending 0.0" in metrics
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
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert ready.json()["down"]["ledger"].startswith("cannot be read: ")
    services.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs of its own, to fill up for real (as root, file permissions would not
    stop a write; a full file system does)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system has no byte left."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * chunk)
    return filler


def test_readyz_is_503_while_the_ledger_disk_is_full(small_disk: Path, clock: FixedClock) -> None:
    settings = Settings(
        ledger={"url": f"sqlite:///{small_disk / 'ledger.db'}"},  # type: ignore[arg-type]
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
    try:
        with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
            assert client.get("/readyz").status_code == 200
            filler = fill(small_disk)
            # Every write fails; reads still answer.
            with pytest.raises(OperationalError, match="disk is full"):
                services.engine.ingest([snap("Done", "2", 1)])
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            body = ready.json()
            assert body["status"] == "unavailable"
            assert body["down"]["ledger"].startswith("cannot be written: No space left on device")
            assert client.get("/healthz").status_code == 200  # alive, only not ready

            filler.unlink()
            assert client.get("/readyz").status_code == 200
            assert services.engine.ingest([snap("Done", "2", 1)]).entries_created == 1
    finally:
        services.close()


@pytest.mark.postgres
def test_readyz_is_503_while_the_postgres_ledger_is_read_only(
    postgres_url: str, clock: FixedClock
) -> None:
    settings = Settings(
        ledger={"url": postgres_url},  # type: ignore[arg-type]
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
    name = postgres_url.rsplit("/", 1)[1]
    try:
        with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
            assert client.get("/readyz").status_code == 200
            with services.ledger.engine.connect() as conn:
                conn.execute(
                    text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
                )
                conn.commit()
            services.ledger.engine.dispose()  # new sessions take the setting
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["down"]["ledger"] == (
                "cannot be written: cannot execute INSERT in a read-only transaction"
            )
    finally:
        services.close()
