"""GCRA and the limiter client, on the in-memory store."""

from __future__ import annotations

import asyncio

import pytest

from proj.resilience.limiter import Limiter
from proj.resilience.ratelimit import RateLimit, RateLimitWait, parse_rate
from proj.resilience.ratelimit_store import MemoryLimiterStore
from tests.ratelimit_scenarios import SCENARIOS, Scenario


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_rate_limit_rule_memory(scenario: Scenario) -> None:
    asyncio.run(scenario(MemoryLimiterStore(), "dep"))


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

    async def sleep(s: float) -> None:
        slept.append(s)

    async def main() -> RateLimitWait:
        lim = Limiter("ai", RateLimit(10, 1), MemoryLimiterStore(), max_wait_s=0.25, sleep=sleep)
        for _ in range(3):
            await lim.acquire()
        with pytest.raises(RateLimitWait) as err:
            await lim.acquire()
        return err.value

    err = asyncio.run(main())
    assert [round(s, 2) for s in slept] == [0.1, 0.2]
    assert err.name == "ai" and 0.25 < err.wait_s <= 0.31
