"""GCRA and the limiter client, on the in-memory store."""

from __future__ import annotations

import asyncio

import pytest

from proj.guard.limiter import Limiter
from proj.resilience.ratelimit import RateLimit, RateLimitWait, parse_rate, parse_retry_after
from proj.resilience.ratelimit_store import AsyncLimiterAdapter, MemoryLimiterStore
from tests.ratelimit_scenarios import SCENARIOS, Scenario


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_rate_limit_rule_memory(scenario: Scenario) -> None:
    asyncio.run(scenario(AsyncLimiterAdapter(MemoryLimiterStore()), "dep"))


@pytest.mark.parametrize(
    ("spec", "limit"),
    [
        ("50/s", RateLimit(50, 1)),
        ("3000/m", RateLimit(3000, 60)),
        ("10/5s", RateLimit(10, 5)),
        ({"rate": "20/s", "burst": 5}, RateLimit(20, 1, 5)),
        ("1.5 / h", RateLimit(1.5, 3600)),
    ],
)
def test_parse_rate(spec: object, limit: RateLimit) -> None:
    assert parse_rate(spec) == limit


@pytest.mark.parametrize("spec", ["fast", "50", "50/d", "0/s", {"rate": "5/s", "burst": 0}])
def test_parse_rate_rejects(spec: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(spec)


def test_limiter_sleeps_exactly_its_wait_and_defers_beyond_the_maximum() -> None:
    slept: list[float] = []
    lim = Limiter("ai", RateLimit(10, 1), MemoryLimiterStore(), max_wait_s=0.25, sleep=slept.append)
    for _ in range(3):
        lim.acquire()
    with pytest.raises(RateLimitWait) as err:
        lim.acquire()
    assert [round(s, 2) for s in slept] == [0.1, 0.2]
    assert err.value.name == "ai" and 0.25 < err.value.wait_s <= 0.31


def test_limiter_asyncio_api_waits_the_same() -> None:
    slept: list[float] = []

    async def asleep(s: float) -> None:
        slept.append(s)

    store = MemoryLimiterStore()

    async def main() -> RateLimitWait:
        lim = Limiter(
            "ai",
            RateLimit(10, 1),
            store,
            lambda: AsyncLimiterAdapter(store),
            max_wait_s=0.25,
            asleep=asleep,
        )
        for _ in range(3):
            await lim.aacquire()
        with pytest.raises(RateLimitWait) as err:
            await lim.aacquire()
        return err.value

    err = asyncio.run(main())
    assert [round(s, 2) for s in slept] == [0.1, 0.2]
    assert err.name == "ai" and 0.25 < err.wait_s <= 0.31


def test_limiter_max_wait_of_one_call() -> None:
    lim = Limiter("t", RateLimit(1, 1), MemoryLimiterStore(), max_wait_s=5, sleep=lambda s: None)
    lim.acquire()
    with pytest.raises(RateLimitWait):
        lim.acquire(max_wait_s=0.5)  # a task does not hold its slot for a second


@pytest.mark.parametrize(
    ("value", "seconds"), [("3", 3.0), ("0.5", 0.5), ("-1", 0.0), ("", None), ("soon", None)]
)
def test_parse_retry_after_seconds(value: str, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


class _LateClock:
    """A clock that a sleep moves forward by the time asked plus ``late_s``."""

    def __init__(self, late_s: float) -> None:
        self.now = 1000.0
        self.late_s = late_s
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s + self.late_s


def _limiter(clock: _LateClock) -> Limiter:
    # 50/s: 20 ms apart; a caller more than 5 ms late gives up its slot.
    return Limiter("ai", RateLimit(50, 1), MemoryLimiterStore(), clock=clock, sleep=clock.sleep)


def test_a_caller_that_wakes_late_takes_a_new_slot_instead_of_crowding_the_next() -> None:
    clock = _LateClock(late_s=0.030)
    lim = _limiter(clock)
    lim.acquire()  # the first slot is now: no sleep, not late
    assert lim.stale_slots == 0
    lim.acquire()  # wakes 30 ms late every time: two new slots, then it goes
    assert lim.stale_slots == 2
    assert len(clock.slept) == 3


def test_a_caller_a_little_late_keeps_its_slot() -> None:
    clock = _LateClock(late_s=0.003)
    lim = _limiter(clock)
    for _ in range(3):
        lim.acquire()
    assert lim.stale_slots == 0
    assert len(clock.slept) == 2
