"""Shared helpers for the benchmark scripts: the machine, the result table, PostgreSQL.

Benchmarks print figures next to their limits; they never assert. Each script runs as
``.venv/bin/python bench/NAME.py [--quick]`` from the repository root.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # `tests` (fakes' helpers, the throwaway PostgreSQL cluster) is not installed.
    sys.path.insert(0, str(REPO_ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "load average at start": load,
    }


def code_version() -> str:
    """The commit measured, and which product files differ from it (work in progress)."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "sync", "connectors", "mapping"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


def print_machine() -> None:
    info = machine()
    print("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    print(f"code: {code_version()}")


@dataclass
class Row:
    """One figure: what, the measured value (text), the limit (text), and pass/fail/info."""

    figure: str
    value: str
    limit: str = ""
    ok: bool | None = None  # None: informational, no limit

    @property
    def verdict(self) -> str:
        if self.ok is None:
            return "info"
        return "PASS" if self.ok else "FAIL"


def print_table(title: str, rows: Sequence[Row]) -> None:
    """A plain-text table: figure | value | limit | verdict."""
    headers = ("figure", "value", "limit", "verdict")
    cells = [(r.figure, r.value, r.limit or "-", r.verdict) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print()
    print(f"== {title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
    print()


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    """Optionally keep the raw figures (``--json PATH``)."""
    if path:
        Path(path).write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str))


def maxrss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a throwaway PostgreSQL cluster (tests/conftest.py's), or
    ``KANVOICE_TEST_POSTGRES_URL`` if set. Raises if no server can be started."""
    url = os.environ.get("KANVOICE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    from tests.conftest import _PostgresCluster

    cluster = _PostgresCluster()
    url = cluster.start()
    try:
        yield url
    finally:
        cluster.stop()


def fresh_postgres_database(server_url: str, name: str) -> str:
    """Create database `name` on the server and return its URL."""
    from sqlalchemy import create_engine, text

    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return f"{server_url.rsplit('/', 1)[0]}/{name}"


def quiet_logs() -> None:
    """Structured logs off (benchmarks measure the work, not the terminal)."""
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.CRITICAL)


def _package_of(filename: str, function: str) -> str:
    """A coarse owner for a profiled function: our package, a library, or a C call."""
    if filename == "~":  # a built-in: name it by what it belongs to
        for marker, label in (
            ("sqlite3", "sqlite3 driver (C)"),
            ("psycopg", "psycopg driver (C)"),
            ("epoll", "waiting in epoll"),
            ("socket", "sockets (C)"),
            ("_hashlib", "hashlib (C)"),
        ):
            if marker in function:
                return label
        return "other built-ins (C)"
    if filename.startswith("<frozen importlib"):
        return "importlib (imports at run time)"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        index = parts.index("site-packages")
        return parts[index + 1].removesuffix(".py") if index + 1 < len(parts) else "site-packages"
    try:
        relative = path.resolve().relative_to(REPO_ROOT)
    except ValueError:
        return f"stdlib {path.stem}" if "python3" in filename else filename
    return "kanvoice " + "/".join(relative.parts[:2]).removesuffix(".py")


def own_time_by_package(stats: Any, top: int = 15) -> str:
    """Own time (tottime) of a cProfile run summed per package (call before strip_dirs)."""
    totals: dict[str, float] = {}
    grand = 0.0
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        owner = _package_of(filename, function)
        totals[owner] = totals.get(owner, 0.0) + tottime
        grand += tottime
    lines = [f"-- own time by package (of {grand:.2f} s profiled)"]
    for owner, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * seconds / grand:6.1f}%  {seconds:7.3f} s  {owner}")
    return "\n".join(lines) + "\n"
