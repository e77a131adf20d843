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
    assert "4,000.00 EUR" in out and "120,000 JPY" in out and "1,666.00 USD" in out


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
        assert {c["client"] for c in payload["clients"]} == {"acme", "globex", "kaiju"}
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "Acme GmbH" in page.text
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"dashboard on http://127.0.0.1:{port}" in output
