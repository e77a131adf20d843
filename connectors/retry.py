"""One retry helper for the HTTP adapters: bounded attempts, exponential backoff with a
cap, and the server's `Retry-After` honoured (up to a limit).

    result = await with_retries(
        lambda: send(request),
        schedule=RetrySchedule(max_attempts=4, backoff_initial=0.5, backoff_max=8.0),
        retry_on=lambda exc: isinstance(exc, Transient),
        sleep=self._sleep,
    )

A failure `retry_on` rejects leaves at once; the last failure leaves when the
attempts run out (the adapter translates it into `RetriableError`, whose
`retry_after` the outbox honours). All waiting goes through the injected `sleep`,
so tests never wait.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

_T = TypeVar("_T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """`max_attempts` in all (the first included). Attempt n waits
    `backoff_initial * 2**(n-1)`, at most `backoff_max`; a hinted wait (Retry-After) is
    used instead, at most `max_hint` (None: as long as the server says)."""

    max_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    max_hint: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_initial < 0 or self.backoff_max < 0:
            raise ValueError("backoff must not be negative")

    def backoff(self, attempt: int) -> float:
        exponent = min(max(attempt, 1) - 1, 62)
        return float(min(self.backoff_max, self.backoff_initial * 2.0**exponent))

    def wait(self, attempt: int, hint: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if hint is not None:
            hinted = max(hint, 0.0)
            return hinted if self.max_hint is None else min(hinted, self.max_hint)
        return self.backoff(attempt)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` in seconds: delta-seconds, or an HTTP date (relative to `now`,
    epoch seconds); None when absent or unreadable. Never negative."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        current = time.time() if now is None else now
        return max(when.timestamp() - current, 0.0)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def retry_after_from(headers: Mapping[str, Any] | None, now: float | None = None) -> float | None:
    """`Retry-After` from any header mapping (case-insensitive; list values take the
    first), or None."""
    if not headers:
        return None
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) and value else value
            return parse_retry_after(str(raw), now)
    return None


def _hint_attribute(exc: BaseException) -> float | None:
    hint = getattr(exc, "retry_after", None)
    return float(hint) if isinstance(hint, int | float) else None


async def with_retries(
    call: Callable[[], Awaitable[_T]],
    *,
    schedule: RetrySchedule,
    retry_on: Callable[[Exception], bool],
    sleep: Sleep,
    hint: Callable[[Exception], float | None] = _hint_attribute,
    before_sleep: Callable[[Exception, float], None] | None = None,
) -> _T:
    """`call()` until it returns, a failure is not retriable, or the attempts run out
    (the last failure is raised as it is). `hint(exc)`: the server's wait (default:
    the exception's `retry_after`); `before_sleep(exc, seconds)`: for the adapter's
    accounting (rate-limit waits, throttle logs)."""
    attempt = 1
    while True:
        try:
            return await call()
        except Exception as exc:
            if attempt >= schedule.max_attempts or not retry_on(exc):
                raise
            seconds = schedule.wait(attempt, hint(exc))
            if before_sleep is not None:
                before_sleep(exc, seconds)
            await sleep(seconds)
            attempt += 1
