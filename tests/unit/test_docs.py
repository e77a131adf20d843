"""The README and docs/ stand alone in a user's clone, and agree with the code."""

from __future__ import annotations

import re

from typer.main import get_command

from sync.cli import app
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
DESIGN = (REPO_ROOT / "docs" / "design.md").read_text(encoding="utf-8")
EXAMPLE = (REPO_ROOT / "config.example.toml").read_text(encoding="utf-8")


def test_readme_points_inside_the_repository() -> None:
    assert "../shared" not in README and "DESIGN.md" not in README
    assert "docs/design.md" in README
    for link in re.findall(r"\]\(([^)#]+)", README):
        if not link.startswith("http"):
            assert (REPO_ROOT / link).exists(), link


def test_design_page_holds_what_users_need() -> None:
    for heading in (
        "## Data flow",
        "## Entry states",
        "## Billing rules",
        "## Command line",
        "## HTTP",
        "## Logs",
    ):
        assert heading in DESIGN, heading
    assert "../shared" not in DESIGN
    for state in ("in_progress", "ready", "drafted", "approved", "invoiced", "paid"):
        assert f"`{state}`" in DESIGN


def test_every_command_is_documented() -> None:
    group = get_command(app)
    names = set(group.commands)  # type: ignore[attr-defined]
    for name in names:
        assert f"`kanvoice {name}" in DESIGN, name
        assert f"`kanvoice {name}" in README, name
    assert "--version" in DESIGN and "--version" in README
    assert "--offline" in DESIGN and "--offline" in README
    assert "--reason TEXT` | reject a draft; `--reason` is required" in DESIGN


def test_logs_and_ledger_password_are_described_as_built() -> None:
    assert "logs to standard error" in README and "standard output" not in README
    assert "journalctl -u kanvoice -p err" in README
    # The PostgreSQL password: PGPASSWORD everywhere, never in the ledger URL.
    assert "PGPASSWORD" in EXAMPLE and "password: KANVOICE_LEDGER__URL" not in EXAMPLE
    assert "PGPASSWORD" in README
    assert "systemd (for `systemd-analyze`)" in README
