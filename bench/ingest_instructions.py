"""Machine instructions per snapshot of `Engine.ingest` (phases 1-3 of bench/ingest.py),
counted by valgrind's cachegrind: a figure that does not move with the machine's load,
for telling a 1-2 % change from noise (wall and CPU time on a shared 2-core VM vary
by ±5 % between runs).

Runs the same child twice under ``valgrind --tool=cachegrind --cache-sim=no``: once
ingesting, once only building the snapshots and the services; the difference divided by
the snapshots ingested is the figure. Python, SQLite and the driver are all counted.
Needs ``valgrind`` on PATH; about a minute for the default 4,000 items.

    .venv/bin/python bench/ingest_instructions.py [--items N]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import print_machine

CHILD = """
import sys, tempfile
sys.path.insert(0, {bench!r})
import ingest
ingest.quiet_logs()
snapshot_phases = ingest.phases({items})
with tempfile.TemporaryDirectory() as tmp:
    services = ingest._services(f"sqlite:///{{tmp}}/ledger.db")
    if {ingesting}:
        for batch in snapshot_phases[:3]:
            services.engine.ingest(batch)
    services.close()
"""


def instructions(items: int, ingesting: bool) -> int:
    """Instructions (cachegrind's `I refs`) of one child run."""
    with tempfile.TemporaryDirectory(prefix="kanvoice-ir-") as tmp:
        script = Path(tmp) / "child.py"
        bench = str(Path(__file__).resolve().parent)
        script.write_text(CHILD.format(bench=bench, items=items, ingesting=ingesting))
        done = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={tmp}/out",
                sys.executable,
                str(script),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {done.stderr[-500:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=4_000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    print_machine()
    from ingest import phases

    snapshots = sum(len(batch) for batch in phases(args.items)[:3])
    ingesting = instructions(args.items, True)
    baseline = instructions(args.items, False)
    per_snapshot = (ingesting - baseline) / snapshots
    print(f"{args.items} items, {snapshots} snapshots (phases 1-3 of bench/ingest.py)")
    print(f"instructions per snapshot: {per_snapshot:,.0f}")


if __name__ == "__main__":
    main()
