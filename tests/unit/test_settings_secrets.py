"""Secrets never come from the settings file, and a secrets directory that cannot be used
stops kanvoice at start with one line naming the file (or directory) and the reason."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sync.cli import app
from sync.settings import ConfigError, load_settings, secret_settings
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "config.example.toml"
NOBODY = 65534


@pytest.fixture(autouse=True)
def no_secrets_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KANVOICE_SECRETS_DIR", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def with_line(tmp_path: Path, section: str, line: str) -> Path:
    """The example file with `line` added to its `[section]` table."""
    text = EXAMPLE.read_text(encoding="utf-8")
    header = f"[{section}]\n"
    if header in text:
        text = text.replace(header, header + line + "\n", 1)
    else:
        text = header + line + "\n" + text
    path = tmp_path / "kanvoice.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_secret_setting_is_known() -> None:
    assert set(secret_settings()) == {
        ("server", "dashboard_token"),
        ("server", "dashboard_password"),
        ("stripe", "api_key"),
        ("stripe", "webhook_secret"),
        ("slack", "bot_token"),
        ("slack", "signing_secret"),
        ("slack", "app_token"),
        ("github", "token"),
        ("github", "private_key"),
        ("github", "webhook_secret"),
        ("azure_devops", "pat"),
        ("azure_devops", "hook_password"),
    }


@pytest.mark.parametrize(("section", "key"), secret_settings())
def test_a_secret_in_the_file_is_refused_naming_the_key_and_the_variable(
    section: str, key: str, tmp_path: Path
) -> None:
    path = with_line(tmp_path, section, f'{key} = "live-secret-value"')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert f"{section}.{key}" in message
    assert f"KANVOICE_{section.upper()}__{key.upper()}" in message
    assert "live-secret-value" not in message
    assert "\n" not in message


def test_a_stripe_key_in_the_file_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    path = with_line(tmp_path, "stripe", 'api_key = "sk_live_do_not_commit"')
    result = CliRunner().invoke(app, ["check-config", "-c", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "stripe.api_key" in lines[0] and "KANVOICE_STRIPE__API_KEY" in lines[0]
    assert "sk_live" not in result.output and "Traceback" not in result.output


def test_a_ledger_url_with_a_password_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kanvoice.toml"
    path.write_text('[ledger]\nurl = "postgresql+psycopg://kv:hunter2@db/kv"\n')
    with pytest.raises(ConfigError, match=r"ledger\.url holds a password") as info:
        load_settings(path)
    assert "hunter2" not in str(info.value)


def test_a_ledger_url_with_a_password_from_the_environment_is_fine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KANVOICE_LEDGER__URL", "postgresql+psycopg://kv:pw@db/kv")
    assert load_settings(EXAMPLE).ledger.url.endswith("@db/kv")


def test_a_missing_secrets_dir_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KANVOICE_SECRETS_DIR", str(tmp_path / "no-such-dir"))
    expected = r"\$KANVOICE_SECRETS_DIR = .*no-such-dir.*does not exist"
    with pytest.raises(ConfigError, match=expected):
        load_settings(EXAMPLE)


def test_a_secrets_dir_that_is_a_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="is not a directory"):
        load_settings(EXAMPLE)


def test_a_dangling_secret_file_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "stripe__api_key").symlink_to(tmp_path / "gone")
    monkeypatch.setenv("KANVOICE_SECRETS_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        load_settings(EXAMPLE)
    assert str(info.value).startswith(f"secret file {tmp_path / 'stripe__api_key'}: cannot read")


def load_as_another_user(path: Path) -> str:
    """`load_settings` in a child process whose uid cannot read root's 0400 files (as
    kanvoice under `DynamicUser=` or uid 10001 in a container); its error message."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, load, report
        os.close(read)
        try:
            if os.geteuid() == 0:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            try:
                load_settings(path)
                message = "loaded"
            except ConfigError as exc:
                message = str(exc)
            except BaseException as exc:  # what a user would see as a traceback
                message = f"TRACEBACK {exc.__class__.__name__}: {exc}"
            os.write(write, message.encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the child of `load_as_another_user` can enter (pytest's are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="kanvoice-secrets-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_an_unreadable_secret_file_names_the_file_and_the_reason(
    monkeypatch: pytest.MonkeyPatch, shared_dir: Path
) -> None:
    secrets = shared_dir / "secrets"
    secrets.mkdir(mode=0o755)
    secret = secrets / "stripe__api_key"
    secret.write_text("sk_test_unreadable")
    # Owned by root with 0400 (compose secrets before the README's chown), or 0000 when
    # the tests do not run as root: unreadable for kanvoice's user either way.
    secret.chmod(0o400 if os.geteuid() == 0 else 0o000)
    config = shared_dir / "kanvoice.toml"
    config.write_text(EXAMPLE.read_text(encoding="utf-8"))
    config.chmod(0o644)
    monkeypatch.setenv("KANVOICE_SECRETS_DIR", str(secrets))
    message = load_as_another_user(config)
    assert message.startswith(f"secret file {secret}: cannot read it: Permission denied"), message
    assert "sk_test_unreadable" not in message and "\n" not in message


def test_an_unreadable_settings_file_is_one_line_not_a_traceback(shared_dir: Path) -> None:
    config = shared_dir / "kanvoice.toml"
    config.write_text(EXAMPLE.read_text(encoding="utf-8"))
    config.chmod(0o600 if os.geteuid() == 0 else 0o000)
    message = load_as_another_user(config)
    assert message.startswith(f"{config}: cannot read it: Permission denied"), message
