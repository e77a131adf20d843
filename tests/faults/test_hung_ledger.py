"""Issue #15 fault matrix: a hung ledger (the PostgreSQL server stopped with SIGSTOP for
about 20 s) under the real `kanvoice run`.

While the server is stopped: `/healthz` answers every probe (client timeout 1 s; the
figures are printed, not asserted), a webhook is answered 503 well before the sender's
10 s timeout, `/readyz` reports the ledger unready. After SIGCONT the next webhook is
queued and processed.

The test starts a PostgreSQL cluster of its own (not the session's shared one), since
stopping a server stops every connection to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from connectors.github.webhook import sign_body
from sync.ledger import schema as t
from tests.conftest import _PostgresCluster
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github
from tests.faults.test_inbox_crash import CONFIG, SECRET, TOKEN, free_port, serving, wait_for

KANVOICE = str(Path(sys.executable).parent / "kanvoice")
STOP_SECONDS = 20.0

pytestmark = pytest.mark.slow


@pytest.fixture
def own_postgres() -> Iterator[tuple[_PostgresCluster, str]]:
    try:
        cluster = _PostgresCluster()
        url = cluster.start()
    except (FileNotFoundError, KeyError, subprocess.CalledProcessError) as exc:
        if os.environ.get("KANVOICE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL not available: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('CREATE DATABASE "kv_hung"'))
    admin.dispose()
    try:
        yield cluster, url.rsplit("/", 1)[0] + "/kv_hung"
    finally:
        cluster.stop()


def server_pids(cluster: _PostgresCluster) -> list[int]:
    """The postmaster and every process it started (backends, checkpointer, ...)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == postmaster:
            pids.append(int(proc.name))
    return pids


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def webhook(fake: FakeGitHubProject, node_id: str, port: int) -> httpx.Response:
    body = json.dumps(fake.webhook_payload(node_id, "edited")).encode()
    return httpx.post(
        f"http://127.0.0.1:{port}/webhooks/github",
        content=body,
        headers={
            "X-GitHub-Event": "projects_v2_item",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign_body(SECRET.encode(), body),
            "Content-Type": "application/json",
        },
        timeout=10,  # GitHub's own timeout
    )


def ready_items(ledger_url: str) -> set[str]:
    engine = create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(t.items.c.external_id)
                .join(t.entries, t.entries.c.item_id == t.items.c.id)
                .where(t.entries.c.state == "ready")
            ).all()
            return {r[0] for r in rows}
    finally:
        engine.dispose()


def test_a_stopped_postgres_keeps_healthz_answering_and_webhooks_503_fast(
    own_postgres: tuple[_PostgresCluster, str], tmp_path: Path
) -> None:
    cluster, ledger_url = own_postgres
    fake = FakeGitHubProject(owner="acme", number=1, require_token=TOKEN)
    with serve_fake_github(fake) as api_url:
        port = free_port()
        config = tmp_path / "kanvoice.toml"
        config.write_text(CONFIG.format(ledger_url=ledger_url, port=port, api_url=api_url))
        log = tmp_path / "kanvoice.log"
        env = {
            **os.environ,
            "KANVOICE_GITHUB__TOKEN": TOKEN,
            "KANVOICE_GITHUB__WEBHOOK_SECRET": SECRET,
        }
        env.pop("KANVOICE_FAILPOINT", None)
        with log.open("ab") as out:
            process = subprocess.Popen(
                [KANVOICE, "run", "--without-stripe", "-c", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            wait_for(lambda: serving(port) or process.poll() is not None, what="kanvoice")
            wait_for(lambda: "board.synced" in log.read_text(), what="the start-up poll")
            before = fake.add_issue("Before", status="Done", hours=1)
            assert webhook(fake, before.node_id, port).status_code == 202
            wait_for(lambda: before.node_id in ready_items(ledger_url), what="the first webhook")

            pids = server_pids(cluster)
            probes: list[float] = []
            hung_webhooks: list[tuple[int, float]] = []
            readyz: list[tuple[int, float]] = []
            during = fake.add_issue("During", status="Done", hours=2)
            signal_all(pids, signal.SIGSTOP)
            try:
                stopped_at = time.monotonic()
                while time.monotonic() - stopped_at < STOP_SECONDS:
                    started = time.perf_counter()
                    answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    probes.append(time.perf_counter() - started)
                    assert answer.status_code == 200 and answer.json()["status"] == "ok"
                    if len(probes) in (3, 12):
                        started = time.perf_counter()
                        status = webhook(fake, during.node_id, port).status_code
                        hung_webhooks.append((status, time.perf_counter() - started))
                        started = time.perf_counter()
                        status = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
                        readyz.append((status.status_code, time.perf_counter() - started))
                    time.sleep(0.5)
            finally:
                signal_all(pids, signal.SIGCONT)
            print(
                f"\nledger stopped {STOP_SECONDS:g} s: {len(probes)} /healthz probes, slowest "
                f"{max(probes) * 1000:.1f} ms, median {sorted(probes)[len(probes) // 2] * 1000:.1f}"
                f" ms; webhooks {[(s, round(d, 2)) for s, d in hung_webhooks]} (status, s); "
                f"/readyz {[(s, round(d, 2)) for s, d in readyz]}"
            )
            assert [status for status, _ in hung_webhooks] == [503, 503]
            assert [status for status, _ in readyz] == [503, 503]
            assert all(seconds < 10 for _, seconds in hung_webhooks)

            # The server is back: the next delivery is queued and processed.
            after = fake.add_issue("After", status="Done", hours=3)
            statuses: list[int] = []

            def accepted() -> bool:
                statuses.append(webhook(fake, after.node_id, port).status_code)
                return statuses[-1] == 202

            wait_for(accepted, timeout=30, what="a webhook to be queued again")
            wait_for(
                lambda: after.node_id in ready_items(ledger_url),
                timeout=30,
                what="the webhook after the outage to be processed",
            )
            assert process.poll() is None
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=60) == 0
