"""A small statistical profiler for every thread of a server process.

cProfile sees only the thread that enabled it, but kanvoice's webhooks run on the
event loop *and* in `asyncio.to_thread` workers (the ledger). This samples
`sys._current_frames()` from a daemon thread at a fixed interval and counts, per
function, the samples where it is the innermost frame ("own") and where it is
anywhere on the stack ("total"). Idle frames (a thread parked in select/epoll, a
lock or a queue wait) are left out, so the shares are of busy samples.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import CodeType, FrameType

_IDLE = (
    ("selectors.py", "select"),
    ("threading.py", "wait"),
    ("threading.py", "_wait_for_tstate_lock"),
    ("queue.py", "get"),
    ("thread.py", "_worker"),  # a pool worker blocked in SimpleQueue.get (C)
)


_LABELS: dict[CodeType, str] = {}
_IDLE_CODES: dict[CodeType, bool] = {}


def _label(code: CodeType) -> str:
    label = _LABELS.get(code)
    if label is None:
        parts = Path(code.co_filename).parts
        short = "/".join(parts[-2:]) if len(parts) >= 2 else code.co_filename
        label = _LABELS[code] = f"{short}:{code.co_firstlineno}({code.co_name})"
    return label


def _is_idle(code: CodeType) -> bool:
    idle = _IDLE_CODES.get(code)
    if idle is None:
        idle = _IDLE_CODES[code] = (Path(code.co_filename).name, code.co_name) in _IDLE
    return idle


class Sampler:
    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.own: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.busy = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.is_set():
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                self.samples += 1
                if _is_idle(frame.f_code):
                    continue
                self.busy += 1
                self.own[_label(frame.f_code)] += 1
                seen: set[CodeType] = set()
                current: FrameType | None = frame
                while current is not None:
                    code = current.f_code
                    if code not in seen:
                        seen.add(code)
                        self.total[_label(code)] += 1
                    current = current.f_back
            time.sleep(self.interval)

    def report(self, top: int = 25) -> str:
        lines = [f"busy samples: {self.busy} (of {self.samples} thread samples)"]
        if not self.busy:
            return lines[0]
        lines.append(f"-- top {top} by own samples (innermost frame)")
        for label, count in self.own.most_common(top):
            lines.append(f"{100 * count / self.busy:6.1f}%  {label}")
        lines.append(f"-- top {top} by total samples (anywhere on the stack)")
        for label, count in self.total.most_common(top):
            lines.append(f"{100 * count / self.busy:6.1f}%  {label}")
        return "\n".join(lines)
