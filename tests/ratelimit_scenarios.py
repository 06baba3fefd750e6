"""GCRA rules as scenarios, run against the memory store (unit) and Redis (integration)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from proj.resilience.ratelimit import RateLimit
from proj.resilience.ratelimit_store import AsyncLimiterStore as LimiterStore

T0 = 1_000_000_000_000.0
L = RateLimit(50, 1.0, burst=1)  # one slot every 20 ms
Scenario = Callable[[LimiterStore, str], Awaitable[None]]


async def slots_are_spaced_by_the_interval(s: LimiterStore, n: str) -> None:
    waits = [(await s.acquire(n, L, 5_000, now_ms=T0)).wait_ms for _ in range(5)]
    assert waits == [0.0, 20.0, 40.0, 60.0, 80.0]


async def burst_admits_that_many_at_once(s: LimiterStore, n: str) -> None:
    b = RateLimit(50, 1.0, burst=3)
    waits = [(await s.acquire(n, b, 5_000, now_ms=T0)).wait_ms for _ in range(5)]
    assert waits == [0.0, 0.0, 0.0, 20.0, 40.0]


async def idle_time_is_not_banked_beyond_the_burst(s: LimiterStore, n: str) -> None:
    await s.acquire(n, L, 5_000, now_ms=T0)
    later = T0 + 10_000
    waits = [(await s.acquire(n, L, 5_000, now_ms=later)).wait_ms for _ in range(2)]
    assert waits == [0.0, 20.0]


async def a_wait_beyond_the_maximum_is_not_reserved(s: LimiterStore, n: str) -> None:
    for _ in range(5):
        await s.acquire(n, L, 5_000, now_ms=T0)  # reserves up to +80 ms
    r = await s.acquire(n, L, 50, now_ms=T0)
    assert (r.granted, r.wait_ms) == (False, 100.0)
    r = await s.acquire(n, L, 5_000, now_ms=T0)
    assert (r.granted, r.wait_ms) == (True, 100.0)  # the refused call did not take the slot


async def push_holds_everyone_until_retry_after(s: LimiterStore, n: str) -> None:
    await s.push(n, L, 2_000, now_ms=T0)
    r = await s.acquire(n, L, 5_000, now_ms=T0 + 500)
    assert r.granted and r.wait_ms == 1_500.0
    r = await s.acquire(n, L, 5_000, now_ms=T0 + 500)
    assert r.wait_ms == 1_520.0


async def push_applies_to_unlimited_dependencies(s: LimiterStore, n: str) -> None:
    assert (await s.acquire(n, None, 5_000, now_ms=T0)).wait_ms == 0.0
    await s.push(n, None, 2_000, now_ms=T0)
    assert (await s.acquire(n, None, 5_000, now_ms=T0 + 1_000)).wait_ms == 1_000.0
    assert (await s.acquire(n, None, 500, now_ms=T0 + 1_000)).granted is False
    assert (await s.acquire(n, None, 5_000, now_ms=T0 + 2_000)).wait_ms == 0.0


async def current_wait_reports_the_queue(s: LimiterStore, n: str) -> None:
    for _ in range(3):
        await s.acquire(n, L, 5_000, now_ms=T0)
    assert await s.wait_ms(n, L, now_ms=T0) == 60.0


SCENARIOS: list[Scenario] = [
    slots_are_spaced_by_the_interval,
    burst_admits_that_many_at_once,
    idle_time_is_not_banked_beyond_the_burst,
    a_wait_beyond_the_maximum_is_not_reserved,
    push_holds_everyone_until_retry_after,
    push_applies_to_unlimited_dependencies,
    current_wait_reports_the_queue,
]
