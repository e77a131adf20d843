"""The image's and compose's health checks follow KANVOICE_SERVER__PORT: run the very
command they run against a local /healthz on a port other than 8765."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
COMPOSE = REPO_ROOT / "deploy" / "compose.yaml"


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def healthz() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _dockerfile_snippet() -> str:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    line = next(raw for raw in text.splitlines() if raw.startswith("HEALTHCHECK"))
    command = json.loads(line[line.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    return str(command[2])


def _compose_snippet() -> str:
    text = COMPOSE.read_text(encoding="utf-8")
    match = re.search(r'- -c\n\s*- "(.*)"\n', text)
    assert match, 'compose healthcheck: python -c "..."'
    return match.group(1)


@pytest.mark.parametrize("snippet", [_dockerfile_snippet, _compose_snippet])
def test_healthcheck_uses_the_configured_port(healthz: int, snippet: object) -> None:
    code = snippet()  # type: ignore[operator]
    env = {**os.environ, "KANVOICE_SERVER__PORT": str(healthz), "KANVOICE_SERVER__HOST": "0.0.0.0"}
    ok = subprocess.run([sys.executable, "-c", code], env=env, timeout=30, check=False)
    assert ok.returncode == 0
    env["KANVOICE_SERVER__PORT"] = str(healthz + 1 if healthz < 65535 else healthz - 1)
    down = subprocess.run(
        [sys.executable, "-c", code], env=env, timeout=30, check=False, capture_output=True
    )
    assert down.returncode != 0
