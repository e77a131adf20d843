"""The secrets and state the deployment steps create beside the checkout (deploy/.env,
deploy/secrets/*, deploy/kanvoice.toml, ledgers, the virtualenv) are neither committed
(`git check-ignore`) nor sent to the image builder (the build context compose sends,
listed with Docker's .dockerignore rules); what the Dockerfile copies still is."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# What the README's Operations steps (systemd and compose) and a developer's run create.
SECRET_PATHS = (
    "deploy/.env",
    "deploy/secrets/stripe__api_key",
    "deploy/secrets/slack__signing_secret",
    "deploy/secrets/github__token",
    "deploy/secrets/server__dashboard_token",
    "deploy/kanvoice.toml",
    "kanvoice.toml",
    "kanvoice.db",
    "kanvoice.db-wal",
    "kanvoice.db-shm",
    "deploy/kanvoice.private-key.pem",
    ".env",
    ".venv/bin/python",
    ".venv/lib/python3.11/site-packages/stripe/__init__.py",
)
KEPT_IN_GIT = (
    "deploy/Dockerfile",
    "deploy/compose.yaml",
    "deploy/kanvoice.service",
    "config.example.toml",
    "tests/data/kanvoice.test.toml",
    ".dockerignore",
)


# --- .dockerignore, the way Docker reads it (moby/patternmatcher) ------------------------


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern[str]
    exception: bool


def _clean(pattern: str) -> str:
    """Go's filepath.Clean (for the relative patterns of a .dockerignore)."""
    parts: list[str] = []
    for part in pattern.split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts and parts[-1] != "..":
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts) or "."


def _regex(pattern: str) -> re.Pattern[str]:
    """patternmatcher's translation: `*` and `?` stop at `/`, `**/` spans any number of
    directories (also none), a trailing `**` anything, `\\` escapes, `[...]` a class."""
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                    out += "(.*/)?"
                else:
                    out += ".*"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif ch == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def parse_dockerignore(text: str) -> list[Rule]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = _clean(line[1:].strip() if exception else line).lstrip("/")
        if pattern and pattern != ".":
            rules.append(Rule(_regex(pattern), exception))
    return rules


def excluded(rules: list[Rule], path: str) -> bool:
    """Docker's MatchesOrParentMatches: a rule matches the path or one of its parent
    directories; the last rule that matches decides."""
    parents = path.split("/")[:-1]
    candidates = [path] + ["/".join(parents[: i + 1]) for i in range(len(parents))]
    verdict = False
    for rule in rules:
        if any(rule.regex.match(candidate) for candidate in candidates):
            verdict = not rule.exception
    return verdict


def build_context(root: Path, rules: list[Rule]) -> list[str]:
    """Every file under `root` that `docker build` would send (the context listing)."""
    sent = []
    for path in sorted(root.rglob("*")):
        if path.is_file() or path.is_symlink():
            relative = path.relative_to(root).as_posix()
            if relative.startswith(".git/"):
                continue  # (excluded too by the first rule; skipped for speed)
            if not excluded(rules, relative):
                sent.append(relative)
    return sent


def dockerfile_sources(dockerfile: Path) -> list[str]:
    """The context paths the Dockerfile's COPY lines read (not `COPY --from=`)."""
    sources: list[str] = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources.extend(args[:-1])
    return sources


@pytest.fixture(scope="module")
def rules() -> list[Rule]:
    return parse_dockerignore((REPO_ROOT / ".dockerignore").read_text(encoding="utf-8"))


def test_the_matcher_follows_dockers_rules() -> None:
    rules = parse_dockerignore("*.md\n!README*.md\nREADME-secret.md\n**/*.go\n/foo/bar/\n")
    assert excluded(rules, "notes.md") and not excluded(rules, "README.md")
    assert excluded(rules, "README-secret.md")
    assert not excluded(rules, "docs/notes.md")  # `*` stops at `/`
    assert excluded(rules, "main.go") and excluded(rules, "a/b/c.go")  # `**/` spans dirs
    assert excluded(rules, "foo/bar") and excluded(rules, "foo/bar/baz.txt")  # parents
    assert not excluded(rules, "foo/barn")
    last = parse_dockerignore("*.md\nREADME-secret.md\n!README*.md\n")
    assert not excluded(last, "README-secret.md")  # the last matching line decides
    assert excluded(parse_dockerignore("temp?\n"), "tempa")


@pytest.mark.parametrize("path", SECRET_PATHS)
def test_secrets_and_state_are_not_in_the_build_context(rules: list[Rule], path: str) -> None:
    assert excluded(rules, path)


def test_the_build_context_is_the_sources_and_nothing_secret(rules: list[Rule]) -> None:
    sent = build_context(REPO_ROOT, rules)
    assert sent, "nothing would be sent"
    # Only what the image is built from: sources, pyproject.toml and the README.
    assert {p.split("/")[0] for p in sent} <= {
        "pyproject.toml",
        "README.md",
        "mapping",
        "connectors",
        "sync",
    }
    assert not [p for p in sent if "__pycache__" in p or p.endswith((".db", ".pyc", ".env"))]
    # Everything the Dockerfile copies is there, whole.
    for source in dockerfile_sources(REPO_ROOT / "deploy" / "Dockerfile"):
        tracked = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "ls-files", "--", source],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        on_disk = tracked or [source]
        for path in on_disk:
            assert path in sent, f"{path} (COPY {source}) is missing from the build context"


def check_ignored(paths: tuple[str, ...]) -> set[str]:
    """The paths git would not add (`git check-ignore`, ignoring the index)."""
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "check-ignore", "--no-index", "--stdin"],
        input="\n".join(paths),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return set(result.stdout.split())


needs_git = pytest.mark.skipif(
    shutil.which("git") is None or not (REPO_ROOT / ".git").exists(),
    reason="not a git checkout",
)


@needs_git
def test_git_add_never_picks_up_the_deployment_secrets() -> None:
    assert check_ignored(SECRET_PATHS) == set(SECRET_PATHS)


@needs_git
def test_git_still_tracks_the_deploy_files_and_examples() -> None:
    assert check_ignored(KEPT_IN_GIT) == set()


def test_the_image_creates_its_secrets_dir() -> None:
    """A missing $KANVOICE_SECRETS_DIR stops kanvoice: the image (run without docker
    secrets, settings from the environment) must still have the one it names."""
    text = (REPO_ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    named = re.search(r"KANVOICE_SECRETS_DIR=(\S+)", text)
    assert named is not None
    assert re.search(rf"install -d [^\n]*{re.escape(named.group(1))}\b", text)
