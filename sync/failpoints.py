"""Crash points for the fault tests: `KANVOICE_FAILPOINT=name` kills the process there.

Only the fault-matrix tests set the variable; in normal operation `failpoint()` is a
dictionary lookup. `name` may end in `@N` to crash at the N-th time the point is hit.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter[str] = Counter()


def failpoint(name: str) -> None:
    wanted = os.environ.get("KANVOICE_FAILPOINT")
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
