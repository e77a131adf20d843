"""Fault matrix, intake rows: `kanvoice run` killed (SIGKILL) after it answered a webhook
202 and before its worker processed the delivery: the restarted daemon processes it.
And a hung ledger (a writer holding the lock): webhooks are answered 503, not left
hanging, so the sender retries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from connectors.github.webhook import sign_body
from sync.composition import build_services
from sync.ledger import schema as t
from sync.settings import Settings
from sync.web.app import create_app
from tests.conftest import FixedClock
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github
from tests.net import free_port, wait_for

KANVOICE = str(Path(sys.executable).parent / "kanvoice")
TOKEN = "ghp_inboxcrashtoken00000000000000000"
SECRET = "inbox crash webhook secret"

CONFIG = """
[ledger]
url = "{ledger_url}"
[server]
port = {port}
[[clients]]
key = "acme"
stripe_customer_id = "cus_AcmeInbox01"
currency = "EUR"
rate = "100"
[[boards]]
key = "acme-web"
source = "github"
client = "acme"
poll_interval_seconds = 86400
[boards.github]
owner = "acme"
project_number = 1
api_url = "{api_url}"
"""


@pytest.fixture
def project() -> Iterator[tuple[FakeGitHubProject, str]]:
    fake = FakeGitHubProject(owner="acme", number=1, require_token=TOKEN)
    with serve_fake_github(fake) as url:
        yield fake, url


def start(config: Path, log: Path, failpoint: str | None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KANVOICE_GITHUB__TOKEN": TOKEN,
        "KANVOICE_GITHUB__WEBHOOK_SECRET": SECRET,
    }
    env.pop("KANVOICE_FAILPOINT", None)
    if failpoint:
        env["KANVOICE_FAILPOINT"] = failpoint
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [KANVOICE, "run", "--without-stripe", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def inbox_statuses(ledger_url: str) -> list[str]:
    engine = create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(t.inbox.c.status)).scalars())
    finally:
        engine.dispose()


def ready_entries(ledger_url: str) -> list[tuple[str, str]]:
    engine = create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(t.items.c.external_id, t.entries.c.state).join(
                    t.entries, t.entries.c.item_id == t.items.c.id
                )
            ).all()
            return [(r[0], r[1]) for r in rows]
    finally:
        engine.dispose()


@pytest.mark.slow
def test_sigkill_after_the_answer_and_before_the_drain_the_restart_processes_it(
    project: tuple[FakeGitHubProject, str], ledger_url: str, tmp_path: Path
) -> None:
    fake, api_url = project
    port = free_port()
    config = tmp_path / "kanvoice.toml"
    config.write_text(CONFIG.format(ledger_url=ledger_url, port=port, api_url=api_url))
    log = tmp_path / "kanvoice.log"
    first = start(config, log, "inbox:before_drain")
    try:
        wait_for(lambda: serving(port) or first.poll() is not None, what="kanvoice to serve")
        # A new leader polls at once; the card moves to Done only after that poll, so
        # only the webhook tells of it.
        wait_for(lambda: "board.synced" in log.read_text(), what="the start-up poll")
        item = fake.add_issue("Checkout", status="Done", hours=2)
        body = json.dumps(fake.webhook_payload(item.node_id, "edited")).encode()
        answer = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/github",
            content=body,
            headers={
                "X-GitHub-Event": "projects_v2_item",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": sign_body(SECRET.encode(), body),
                "Content-Type": "application/json",
            },
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
        # The leader's worker reads the delivery and is killed there (SIGKILL).
        assert first.wait(timeout=60) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert inbox_statuses(ledger_url) == ["pending"]
    assert ready_entries(ledger_url) == []
    assert fake.requests["node"] == 0

    second = start(config, log, None)
    try:
        wait_for(lambda: inbox_statuses(ledger_url) == ["done"], what="the restart to process it")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    assert ready_entries(ledger_url) == [(item.node_id, "ready")]
    # The restart's worker re-fetched the card with one node(id:) call (its start-up
    # poll may have listed it too).
    assert fake.requests["node"] == 1


async def test_a_hung_ledger_answers_webhooks_503_instead_of_hanging(
    project: tuple[FakeGitHubProject, str], ledger_url: str
) -> None:
    """Another connection holds the lock the intake INSERT needs (SQLite: the write lock;
    PostgreSQL: an exclusive lock on the inbox). The INSERT gives up after its short
    busy / lock timeout and the delivery is answered 503; once the lock goes, the
    retry is taken in."""
    fake, api_url = project
    settings = Settings(
        ledger={"url": ledger_url},
        clients=[{"key": "acme", "stripe_customer_id": "cus_AcmeInbox01", "currency": "EUR"}],
        boards=[
            {
                "key": "acme-web",
                "source": "github",
                "client": "acme",
                "github": {"owner": "acme", "project_number": 1, "api_url": api_url},
            }
        ],
        github={"token": TOKEN, "webhook_secret": SECRET},
    )
    services = build_services(settings, FixedClock())
    item = fake.add_issue("Checkout", status="Done", hours=2)
    body = json.dumps(fake.webhook_payload(item.node_id, "edited")).encode()
    headers = {
        "X-GitHub-Event": "projects_v2_item",
        "X-GitHub-Delivery": "hung-1",
        "X-Hub-Signature-256": sign_body(SECRET.encode(), body),
        "Content-Type": "application/json",
    }
    app = create_app(services)  # before the lock: building the app reads the ledger
    locker = create_engine(ledger_url)
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with locker.connect() as conn:
            if ledger_url.startswith("sqlite"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(text("BEGIN"))
                conn.execute(text("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE"))
            holding.set()
            release.wait(30)
            conn.rollback()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert holding.wait(10)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://k.test") as http:
            hung = await http.post("/webhooks/github", content=body, headers=headers)
            assert hung.status_code == 503, hung.text
            assert "ledger" in hung.json()["error"] and hung.headers["retry-after"]
            release.set()
            holder.join(30)
            retried = await http.post("/webhooks/github", content=body, headers=headers)
            assert (retried.status_code, retried.json()["status"]) == (202, "queued")
    finally:
        release.set()
        holder.join(30)
        locker.dispose()
        services.close()
    assert inbox_statuses(ledger_url) == ["pending"]
