"""The one retry helper of the HTTP adapters (connectors.retry)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from connectors.base import RetriableError
from connectors.retry import RetrySchedule, parse_retry_after, retry_after_from, with_retries


class Flaky(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("flaky")
        self.retry_after = retry_after


class Script:
    """Fails with the given exceptions in turn, then returns "ok"."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def transient(exc: Exception) -> bool:
    return isinstance(exc, Flaky)


SCHEDULE = RetrySchedule(max_attempts=4, backoff_initial=0.5, backoff_max=1.5, max_hint=10.0)


async def test_backoff_doubles_up_to_its_cap() -> None:
    call, sleeps = Script(Flaky(), Flaky(), Flaky()), Sleeps()
    assert await with_retries(call, schedule=SCHEDULE, retry_on=transient, sleep=sleeps) == "ok"
    assert call.calls == 4 and sleeps == [0.5, 1.0, 1.5]


async def test_retry_after_is_honoured_up_to_the_limit() -> None:
    call, sleeps = Script(Flaky(3.0), Flaky(120.0), Flaky(-1.0)), Sleeps()
    assert await with_retries(call, schedule=SCHEDULE, retry_on=transient, sleep=sleeps) == "ok"
    assert sleeps == [3.0, 10.0, 0.0]


async def test_attempts_run_out_and_the_last_failure_leaves() -> None:
    last = Flaky()
    call, sleeps = Script(Flaky(), Flaky(), Flaky(), last), Sleeps()
    with pytest.raises(Flaky) as caught:
        await with_retries(call, schedule=SCHEDULE, retry_on=transient, sleep=sleeps)
    assert caught.value is last and call.calls == 4 and len(sleeps) == 3


async def test_a_failure_that_is_not_retriable_leaves_at_once() -> None:
    call, sleeps = Script(ValueError("bad request")), Sleeps()
    with pytest.raises(ValueError):
        await with_retries(call, schedule=SCHEDULE, retry_on=transient, sleep=sleeps)
    assert call.calls == 1 and sleeps == []


async def test_custom_hint_and_before_sleep_hook() -> None:
    seen: list[tuple[str, float]] = []
    call, sleeps = Script(RetriableError("429", retry_after=2.0)), Sleeps()
    got = await with_retries(
        call,
        schedule=RetrySchedule(max_attempts=2),
        retry_on=lambda exc: isinstance(exc, RetriableError),
        hint=lambda exc: 7.0,
        sleep=sleeps,
        before_sleep=lambda exc, seconds: seen.append((str(exc), seconds)),
    )
    assert got == "ok" and sleeps == [7.0] and seen == [("429", 7.0)]


NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("nan", None),
        ("soon", None),
        (None, None),
        (format_datetime(datetime(2026, 12, 3, 10, 0, 30, tzinfo=UTC), usegmt=True), 30.0),
        (format_datetime(datetime(2026, 12, 3, 9, 0, tzinfo=UTC), usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_retry_after_from_any_header_shape() -> None:
    assert retry_after_from({"Retry-After": "4"}) == 4.0
    assert retry_after_from({"retry-after": ["6", "7"]}) == 6.0
    assert retry_after_from({"x-other": "1"}) is None
    assert retry_after_from(None) is None


def test_schedule_validation() -> None:
    with pytest.raises(ValueError):
        RetrySchedule(max_attempts=0)
    assert RetrySchedule(backoff_initial=1, backoff_max=100).backoff(200) == 100
