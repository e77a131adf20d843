"""Benchmark 2, CPU time: `Engine.ingest` on SQLite vs raw `executemany`, phases 1-3.

A companion of bench/ingest.py for a shared machine: wall-clock rates there move with
the other processes' load (up to 3x), while the CPU time of this single-threaded
process (`time.process_time`) moves much less. Same snapshots, same raw baseline
(`bench/ingest.py`); the figures are snapshots per CPU second, best of N.

    .venv/bin/python bench/ingest_cpu.py [--items N] [--repeat N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ingest as b
from _common import print_machine, quiet_logs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    quiet_logs()
    print_machine()
    snapshot_phases = b.phases(args.items)
    mixed = snapshot_phases[:3]
    count = sum(len(p) for p in mixed)
    engine_cpu: list[float] = []
    raw_cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kanvoice-bench-") as tmp:
        for n in range(args.repeat):
            services = b._services(f"sqlite:///{Path(tmp) / f'ledger{n}.db'}")
            try:
                started = time.process_time()
                for batch in mixed:
                    services.engine.ingest(batch)
                engine_cpu.append(time.process_time() - started)
            finally:
                services.close()
            started = time.process_time()
            b.raw_sqlite(Path(tmp) / f"raw{n}.db", [*mixed, []])  # no phase 4
            raw_cpu.append(time.process_time() - started)
    best, raw_best = min(engine_cpu), min(raw_cpu)
    print(f"phases 1-3: {count} snapshots, {args.repeat} paired runs")
    print(
        f"Engine.ingest: {count / best:,.0f} snapshots per CPU second "
        f"(runs: {' / '.join(f'{count / s:,.0f}' for s in engine_cpu)})"
    )
    print(
        f"raw executemany: {count / raw_best:,.0f} rows per CPU second "
        f"(runs: {' / '.join(f'{count / s:,.0f}' for s in raw_cpu)})"
    )
    print(f"engine / raw (best / best, CPU time): {raw_best / best:.1%}")


if __name__ == "__main__":
    main()
