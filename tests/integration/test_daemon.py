"""`kanvoice run` as ops run it: real processes, a leader on one PostgreSQL ledger with
failover, and SIGTERM in the middle of a busy sync."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from sync.ledger import schema as t
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def project() -> Iterator[tuple[FakeGitHubProject, str]]:
    fake = FakeGitHubProject(owner="acme", number=1, require_token=TOKEN)
    with serve_fake_github(fake) as url:
        yield fake, url


class Instance:
    def __init__(self, tmp: Path, name: str, ledger_url: str, api_url: str) -> None:
        self.port = free_port()
        self.config = tmp / f"{name}.toml"
        self.config.write_text(
            CONFIG.format(ledger_url=ledger_url, port=self.port, api_url=api_url)
        )
        self.log = (tmp / f"{name}.log").open("w")
        env = {**os.environ, "KANVOICE_GITHUB__TOKEN": TOKEN}
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


def wait_for(condition: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


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
