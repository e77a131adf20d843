"""deploy/: the systemd unit verifies and is hardened; the Dockerfile runs non-root with a
health check; the compose file has two kanvoice instances on PostgreSQL."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
UNIT = DEPLOY / "kanvoice.service"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
SECRETS = (
    "stripe__api_key",
    "stripe__webhook_secret",
    "slack__bot_token",
    "slack__signing_secret",
    "github__webhook_secret",
    "github__token",
    "azure_devops__pat",
    "azure_devops__hook_password",
)


# --- systemd -----------------------------------------------------------------------------


def unit_directives(text: str) -> dict[str, list[str]]:
    """Key -> every value assigned in the unit (comments and sections skipped)."""
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def installed_kanvoice() -> Path:
    """The console script of the environment running the tests."""
    script = Path(sys.executable).with_name("kanvoice")
    if not script.exists():
        found = shutil.which("kanvoice")
        if not found:
            pytest.fail("the kanvoice console script is not installed in this environment")
        script = Path(found)
    return script


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not Path(path).exists():
        pytest.skip("systemd-analyze is not installed")
    return path


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    # verify checks that ExecStart's program exists: point it at this environment's
    # kanvoice (same entry point as /opt/kanvoice/.venv/bin/kanvoice).
    text = UNIT.read_text(encoding="utf-8")
    assert "ExecStart=/opt/kanvoice/.venv/bin/kanvoice run " in text
    copy = tmp_path / "kanvoice.service"
    copy.write_text(
        text.replace("/opt/kanvoice/.venv/bin/kanvoice", str(installed_kanvoice())),
        encoding="utf-8",
    )
    result = subprocess.run(
        [analyze, "verify", "--man=no", "--generators=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # verify exits 0 even for unknown keys or bad values: those only print warnings.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_unit_security_exposure_is_low(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    copy = tmp_path / "kanvoice.service"
    shutil.copy(UNIT, copy)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"Overall exposure level for kanvoice\.service: ([\d.]+)", result.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze cannot rate units offline: {result.stderr[-300:]}")
    assert float(match.group(1)) <= 2.0, result.stdout


def test_unit_hardening_directives() -> None:
    d = unit_directives(UNIT.read_text(encoding="utf-8"))
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "SystemCallArchitectures": "native",
        "StateDirectory": "kanvoice",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        # Logs into the journal with "<N>" priority prefixes (sync/logs.py).
        "StandardError": "journal",
        "SyslogLevelPrefix": "yes",
    }
    for key, value in expected.items():
        assert value in d.get(key, []), f"{key}={value} missing (have {d.get(key)})"
    assert "@system-service" in d["SystemCallFilter"]
    # Its own user: a dynamic one, or a named system user.
    assert d.get("DynamicUser") == ["yes"] or d.get("User") == ["kanvoice"]
    assert d["ExecStart"] == ["/opt/kanvoice/.venv/bin/kanvoice run -c /etc/kanvoice/kanvoice.toml"]
    assert "KANVOICE_LEDGER__URL=sqlite:////var/lib/kanvoice/kanvoice.db" in d["Environment"]
    assert d["TimeoutStopSec"], "a bounded stop"
    credentials = dict(v.split(":", 1) for v in d["LoadCredential"])
    for name in SECRETS:
        assert credentials.get(name) == f"/etc/kanvoice/credentials/{name}", name
    # No secret is written into the unit itself: they all arrive as credentials.
    secretish = re.compile(r"API_KEY|TOKEN|SECRET|PASSWORD|__PAT\b", re.IGNORECASE)
    for assignment in d.get("Environment", []):
        assert not secretish.search(assignment.split("=", 1)[0]), assignment
    assert "SetCredential" not in d


# --- Dockerfile ----------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        result.append((instruction.upper(), rest.strip()))
    return result


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (name, _) in enumerate(instructions) if name == "FROM"]
    return instructions[starts[-1] :]


def test_dockerfile_runs_non_root_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    final = final_stage(instructions)
    # Base images pinned to a full release, not a moving minor tag.
    for name, args in instructions:
        if name == "FROM":
            assert re.match(r"python:3\.11\.\d+-slim-\w+( AS \w+)?$", args), args
    users = [args for name, args in final if name == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    # USER comes before the command runs, and nothing switches back.
    last_user = max(i for i, (name, _) in enumerate(final) if name == "USER")
    assert all(name != "USER" for name, _ in final[last_user + 1 :])
    healthchecks = [args for name, args in final if name == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "/healthz" in healthchecks[0] and "python" in healthchecks[0]
    assert "curl" not in healthchecks[0]
    # The port follows KANVOICE_SERVER__PORT (no hard-coded 8765 in the check itself).
    assert "KANVOICE_SERVER__PORT" in healthchecks[0] and ":8765/" not in healthchecks[0]
    assert ("EXPOSE", "8765") in final
    entry = " ".join(args for name, args in final if name in ("ENTRYPOINT", "CMD"))
    assert "kanvoice" in entry and "run" in entry
    assert any(name == "RUN" and "pip install" in args for name, args in instructions)


# --- compose -------------------------------------------------------------------------------


def yaml_key_paths(text: str) -> set[str]:
    """Dotted paths of every mapping key in a small YAML file, resolving `<<: *anchor`
    merges; enough to check the structure when PyYAML is not installed."""
    assert "\t" not in text, "YAML forbids tabs for indentation"
    paths: set[str] = set()
    anchors: dict[str, str] = {}
    merges: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        match = re.match(r"\s*(-\s+)?([A-Za-z0-9_.<-]+):(\s|$)(.*)", raw)
        if match is None or match.group(1):
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key, rest = match.group(2), match.group(4).strip()
        parent = stack[-1][1] if stack else ""
        if key == "<<":
            merges.append((parent, rest.lstrip("*").strip()))
            continue
        path = f"{parent}.{key}" if parent else key
        paths.add(path)
        if rest.startswith("&"):
            anchors[rest[1:].split()[0]] = path
        stack.append((indent, path))
    for target, anchor in merges:
        source = anchors[anchor]
        for path in list(paths):
            if path.startswith(source + "."):
                paths.add(target + path[len(source) :])
    return paths


def dict_key_paths(data: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.add(path)
            paths |= dict_key_paths(value, path)
    return paths


def compose_paths() -> set[str]:
    text = COMPOSE.read_text(encoding="utf-8")
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return yaml_key_paths(text)
    return dict_key_paths(yaml.safe_load(text))


def test_compose_has_two_instances_on_postgres() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    paths = compose_paths()
    services = {p.split(".")[1] for p in paths if p.startswith("services.") and p.count(".") >= 1}
    kanvoices = sorted(s for s in services if s.startswith("kanvoice"))
    assert len(kanvoices) >= 2 or any(".deploy.replicas" in p for p in paths), services
    assert "postgres" in services
    assert re.search(r"image:\s*postgres:16\.\d+", text)  # pinned to a minor release
    assert ":8765/healthz" not in text and "KANVOICE_SERVER__PORT" in text
    assert "services.postgres.volumes" in paths and "volumes.pgdata" in paths
    assert "services.postgres.healthcheck" in paths
    for name in kanvoices:
        for key in ("healthcheck", "environment", "depends_on", "secrets"):
            assert f"services.{name}.{key}" in paths, f"{name} has no {key}"
        assert f"services.{name}.environment.KANVOICE_LEDGER__URL" in paths
    assert re.search(r"KANVOICE_LEDGER__URL:\s*postgresql\+psycopg://", text)
    assert "condition: service_healthy" in text
    for name in SECRETS:
        assert f"secrets.{name}" in paths, name
    # No literal secret in the file: passwords come from .env or secret files.
    assert re.search(r"POSTGRES_PASSWORD:\s*\$\{POSTGRES_PASSWORD", text)


def test_yaml_key_paths_resolves_merges() -> None:
    paths = yaml_key_paths("x: &base\n  a: 1\n  b:\n    c: 2\ns:\n  one:\n    <<: *base\n")
    assert {"s.one.a", "s.one.b", "s.one.b.c"} <= paths


def test_readme_operations_section_explains_each_file() -> None:
    readme = (DEPLOY.parent / "README.md").read_text(encoding="utf-8")
    text = readme[readme.index("\n## Operations\n") :]
    for needle in (
        "kanvoice.service",
        "Dockerfile",
        "compose.yaml",
        "LoadCredential",
        "systemctl enable --now kanvoice",
        "Upgrades",
        "Backups",
        "Logs",
        "/metrics",
    ):
        assert needle in text, needle
