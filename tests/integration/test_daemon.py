"""`kanvoice run` as ops run it: real processes, a leader on one PostgreSQL ledger with
failover, and SIGTERM in the middle of a busy sync."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from sync.daemon import Daemon
from sync.ledger import schema as t
from tests.builders import snap
from tests.conftest import FixedClock
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github
from tests.net import free_port
from tests.net import wait_for as _wait_for
from tests.stripe_support import API_KEY, fake_stripe, services_for, world_settings

KANVOICE = str(Path(sys.executable).parent / "kanvoice")
TOKEN = "ghp_daemontesttoken000000000000000000"

CONFIG = """
[ledger]
url = "{ledger_url}"
[server]
port = {port}
[[clients]]
key = "acme"
stripe_customer_id = "cus_AcmeDaemon1"
currency = "EUR"
rate = "100"
rounding = {{ increment_minutes = 1, mode = "up" }}
[[boards]]
key = "acme-web"
source = "github"
client = "acme"
poll_interval_seconds = 1
[boards.github]
owner = "acme"
project_number = 1
api_url = "{api_url}"
"""


# Polled every 0.2 s: the conditions are HTTP health checks and ledger reads.
wait_for = partial(_wait_for, interval=0.2)


@pytest.fixture
def project() -> Iterator[tuple[FakeGitHubProject, str]]:
    fake = FakeGitHubProject(owner="acme", number=1, require_token=TOKEN)
    with serve_fake_github(fake) as url:
        yield fake, url


class Instance:
    def __init__(
        self,
        tmp: Path,
        name: str,
        ledger_url: str,
        api_url: str = "",
        config: str = CONFIG,
        env: dict[str, str] | None = None,
        **values: Any,
    ) -> None:
        self.port = free_port()
        self.config = tmp / f"{name}.toml"
        self.config.write_text(
            config.format(ledger_url=ledger_url, port=self.port, api_url=api_url, **values)
        )
        self.log = (tmp / f"{name}.log").open("w")
        env = {**os.environ, "KANVOICE_GITHUB__TOKEN": TOKEN, **(env or {})}
        env.pop("KANVOICE_FAILPOINT", None)
        self.process = subprocess.Popen(
            [KANVOICE, "run", "--without-stripe", "-c", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def health(self) -> dict[str, Any] | None:
        try:
            return dict(httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).json())
        except httpx.HTTPError:
            return None

    def is_leader(self) -> bool:
        health = self.health()
        return bool(health and health.get("leader"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.log.close()


def billed(ledger_url: str) -> dict[str, Decimal]:
    """Settled hours per item (ready and beyond), as the ledger holds them."""
    engine = create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(t.items.c.external_id, func.sum(t.entries.c.hours))
                .join(t.entries, t.entries.c.item_id == t.items.c.id)
                .where(t.entries.c.state == "ready")
                .group_by(t.items.c.external_id)
            ).all()
            return {r[0]: Decimal(r[1]) for r in rows}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_two_instances_on_postgres_fail_over_without_billing_twice(
    project: tuple[FakeGitHubProject, str], postgres_url: str, tmp_path: Path
) -> None:
    fake, api_url = project
    first_batch = [fake.add_issue(f"First {n}", status="Done", hours=2).node_id for n in range(5)]
    a = Instance(tmp_path, "a", postgres_url, api_url)
    b: Instance | None = None
    try:
        wait_for(a.is_leader, what="instance a to lead")
        b = Instance(tmp_path, "b", postgres_url, api_url)
        wait_for(lambda: b is not None and b.health() is not None, what="instance b to serve")
        wait_for(lambda: len(billed(postgres_url)) == 5, what="the leader to bill the first batch")
        assert b.is_leader() is False

        a.process.send_signal(signal.SIGKILL)
        a.process.wait(timeout=30)
        second_batch = [
            fake.add_issue(f"Second {n}", status="Done", hours=3).node_id for n in range(5)
        ]
        wait_for(b.is_leader, timeout=30, what="instance b to take over")
        wait_for(lambda: len(billed(postgres_url)) == 10, what="the new leader to bill")
        time.sleep(2.5)  # a few more polls by the new leader change nothing
        hours = billed(postgres_url)
        assert set(hours) == set(first_batch) | set(second_batch)
        assert {hours[i] for i in first_batch} == {Decimal(2)}
        assert {hours[i] for i in second_batch} == {Decimal(3)}
    finally:
        a.stop()
        if b is not None:
            b.stop()


@pytest.mark.slow
def test_sigterm_during_a_busy_sync_leaves_no_half_written_state(
    project: tuple[FakeGitHubProject, str], sqlite_url: str, tmp_path: Path
) -> None:
    fake, api_url = project
    fake.add_issues(3000, title="Task", status="Done", hours=1)
    instance = Instance(tmp_path, "busy", sqlite_url, api_url)
    try:
        wait_for(lambda: fake.requests["items_page"] >= 3, what="the sync to be under way")
        instance.process.send_signal(signal.SIGTERM)
        assert instance.process.wait(timeout=60) == 0
    finally:
        instance.stop()
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            items = conn.execute(select(func.count()).select_from(t.items)).scalar_one()
            entries = conn.execute(select(func.count()).select_from(t.entries)).scalar_one()
            orphans = conn.execute(
                select(func.count())
                .select_from(t.items)
                .where(~select(t.entries.c.id).where(t.entries.c.item_id == t.items.c.id).exists())
            ).scalar_one()
    finally:
        engine.dispose()
    # Every item recorded has its entry: batches commit whole or not at all.
    assert orphans == 0
    assert entries == items
    log = (tmp_path / "busy.log").read_text()
    assert "daemon.stopped" in log
    assert TOKEN not in log


def loud_lines(log: str) -> list[str]:
    """Lines logged at ERROR or above, and tracebacks (structlog JSON or plain logging)."""
    loud = re.compile(r'"level":\s*"(error|critical)"|^(ERROR|CRITICAL)\b|Traceback', re.I)
    return [line for line in log.splitlines() if loud.search(line)]


@pytest.mark.slow
def test_the_first_poll_happens_at_start_up(
    project: tuple[FakeGitHubProject, str], sqlite_url: str, tmp_path: Path
) -> None:
    """poll_interval_seconds = 1 hour: without a poll at start the board stays unread."""
    fake, api_url = project
    node = fake.add_issue("Checkout", status="Done", hours=2).node_id
    config = CONFIG.replace("poll_interval_seconds = 1", "poll_interval_seconds = 3600")
    instance = Instance(tmp_path, "fresh", sqlite_url, api_url, config=config)
    try:

        def polled() -> bool:
            try:
                return billed(sqlite_url).get(node) == Decimal(2)
            except OperationalError:  # the daemon has not created the tables yet
                return False

        wait_for(polled, what="the start-up poll")
        assert fake.requests["items_page"] == 1
        instance.process.send_signal(signal.SIGTERM)
        assert instance.process.wait(timeout=60) == 0
    finally:
        instance.stop()
    assert loud_lines((tmp_path / "fresh.log").read_text()) == []


STRIPE_CONFIG = """
[ledger]
url = "{ledger_url}"
[server]
port = {port}
[stripe]
api_base = "{stripe_url}"
requests_per_second = 1000
[[clients]]
key = "acme"
stripe_customer_id = "{customer}"
currency = "EUR"
rate = "120"
timezone = "UTC"
[[boards]]
key = "acme-board"
source = "file"
client = "acme"
"""


@pytest.mark.slow
def test_sigterm_during_a_stripe_drain_lets_the_call_in_flight_finish(
    sqlite_url: str, tmp_path: Path, clock: FixedClock
) -> None:
    with fake_stripe({"acme": "eur"}) as world:
        services = services_for(world_settings(world, sqlite_url), clock)
        services.engine.ingest(
            [snap("Done", "2", 1, item_id=f"S{n}", board="acme-board") for n in range(3)]
        )
        invoice_id = services.invoicing.create_or_refresh_draft("acme").invoice_id
        services.close()
        # Stripe answers the draft's creation slowly: the drain is in flight at SIGTERM.
        world.fake.delay_next("POST", "/v1/invoices", seconds=3)
        instance = Instance(
            tmp_path,
            "drain",
            sqlite_url,
            config=STRIPE_CONFIG,
            env={"KANVOICE_STRIPE__API_KEY": API_KEY},
            stripe_url=world.base_url,
            customer=world.customers["acme"],
        )
        try:
            wait_for(
                lambda: any(
                    r.method == "POST" and r.path == "/v1/invoices" for r in world.fake.requests
                ),
                what="the drain to call Stripe",
            )
            instance.process.send_signal(signal.SIGTERM)
            assert instance.process.wait(timeout=60) == 0
        finally:
            instance.stop()
        (remote,) = world.fake.list_objects("invoice")
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            stripe_id = conn.execute(
                select(t.invoices.c.stripe_invoice_id).where(t.invoices.c.id == invoice_id)
            ).scalar_one()
            created = conn.execute(
                select(t.outbox.c.status).where(t.outbox.c.operation == "create_invoice")
            ).scalar_one()
    finally:
        engine.dispose()
    # The call in flight finished and was recorded: no draft created twice at restart.
    assert stripe_id == remote["id"]
    assert created == "done"
    log = (tmp_path / "drain.log").read_text()
    assert loud_lines(log) == []
    assert "daemon.finishing_jobs" in log
    assert "daemon.stopped" in log


async def test_stop_lets_a_running_job_finish_and_cuts_short_only_past_the_grace(
    sqlite_url: str, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    """In process: APScheduler's shutdown() would cancel the job at once; stop() waits."""
    services = services_for(
        {
            "ledger": {"url": sqlite_url},
            "clients": [
                {"key": "acme", "stripe_customer_id": "cus_A1", "currency": "EUR", "rate": "1"}
            ],
        },
        clock,
    )
    started, finished = asyncio.Event(), asyncio.Event()

    async def short_job() -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.set()

    async def endless_job() -> None:
        started.set()
        await asyncio.Event().wait()

    try:
        for work, grace in ((short_job, 30.0), (endless_job, 0.2)):
            started.clear()
            daemon = Daemon(
                services, app=None, extra_jobs=[("work", work, 3600)], grace_seconds=grace
            )
            daemon.leader.try_acquire()
            daemon._schedule_extra()
            daemon.scheduler.start()
            job = daemon.scheduler.get_job("work")
            assert job is not None
            job.modify(next_run_time=datetime.now(UTC))
            await asyncio.wait_for(started.wait(), timeout=10)
            with capture_logs() as logs:
                await daemon.stop()
            events = [entry["event"] for entry in logs]
            assert "daemon.finishing_jobs" in events
            if work is short_job:
                assert finished.is_set()
                assert "job.cut_short" not in events
            else:
                assert "job.cut_short" in events
    finally:
        services.close()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
