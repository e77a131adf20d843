"""`kanvoice demo` works offline: the fast story end to end, and the live one serving
the dashboard until SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KANVOICE = str(Path(sys.executable).parent / "kanvoice")


def test_fast_demo_plays_the_whole_flow() -> None:
    result = subprocess.run(
        [KANVOICE, "demo", "--fast"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "step 10: acme-web ACME-1 'Login page': ready 2 h = 240.00 EUR" in out
    assert "draft 1 for acme: 4,000.00 EUR" in out
    assert "approved invoice 1 (400000 minor units)" in out
    assert "the client paid 1 invoice(s)" in out
    # Globex is on a retainer: 11.9 h = the 1,200.00 line (10 h) + 1.9 h × 150.00.
    assert "draft 2 for globex: 1,485.00 USD" in out
    assert "4,000.00 EUR" in out and "120,000 JPY" in out and "1,485.00 USD" in out
    assert "Retainers (current period)" in out
    assert "1,200.00 USD of 1,200.00 USD" in out and "1.9 h" in out
    # Kaiju has a budget: its 8 h of 10 reach the 80 % alert, posted once to Slack.
    assert out.count("Budget 80 % reached: client:kaiju: 8 h of 10 h") == 1
    assert "8 h of 10 h" in out and "120,000 JPY of 150,000 JPY" in out
    # One finance digest at the end, in Slack and printed.
    assert "slack #finance: Finance digest: unbilled 120,000 JPY + 1,485.00 USD" in out
    assert "Drafts waiting for approval: 2" in out


def test_live_demo_serves_the_dashboard_and_stops_cleanly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [KANVOICE, "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        payload = None
        while time.monotonic() < deadline:
            try:
                payload = httpx.get(f"http://127.0.0.1:{port}/api/pipeline", timeout=2).json()
                if any(float(c["stages"]["in_progress"]["hours"]) for c in payload["clients"]):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert payload is not None
        clients = {c["client"]: c for c in payload["clients"]}
        assert set(clients) == {"acme", "globex", "kaiju"}
        assert clients["globex"]["retainer"]["included_hours"] == "10"
        assert [b["scope"] for b in clients["kaiju"]["budgets"]] == ["client:kaiju"]
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "Acme GmbH" in page.text
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"dashboard on http://127.0.0.1:{port}" in output
