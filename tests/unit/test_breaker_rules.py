"""The breaker's rules on the in-memory store, and the per-process client's behaviour."""

from __future__ import annotations

import asyncio

import pytest

from proj.provider.errors import PermanentError, ProviderServerError, ProviderTimeout, RateLimited
from proj.resilience.breaker import OPEN, BreakerOpen, BreakerPolicy, jitter_wait
from proj.resilience.breaker_client import Breaker, classify
from proj.resilience.breaker_store import MemoryBreakerStore
from tests.breaker_scenarios import SCENARIOS, Scenario


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_breaker_rule_memory(scenario: Scenario) -> None:
    asyncio.run(scenario(MemoryBreakerStore(), "dep"))


def test_classify_what_counts() -> None:
    assert classify(None) == "success"
    assert classify(ProviderTimeout("t")) == "failure"
    assert classify(ProviderServerError("500", status=500)) == "failure"
    assert classify(RateLimited("429", retry_after_s=1)) == "ignored"
    assert classify(PermanentError("404", status=404)) == "ignored"


def test_jitter_wait_bounds() -> None:
    assert jitter_wait(5.0, 0.0, 100) == 5.0
    assert 5.0 <= jitter_wait(5.0, 0.99, 100) <= 5.5
    assert jitter_wait(5.0, 0.5, 3.0) == 3.0
    assert 0 <= jitter_wait(0.0, 0.5, 10) <= 0.1


def test_client_burst_of_429s_does_not_open() -> None:
    async def main() -> str:
        b = Breaker("ai", BreakerPolicy(min_calls=5), MemoryBreakerStore(), flush_s=0)
        for _ in range(50):
            permit = await b.allow()
            await b.record(permit, classify(RateLimited("429", retry_after_s=1)))
        await b.flush()
        return b.state

    assert asyncio.run(main()) == "closed"


def test_client_opens_then_denies_locally_with_the_wait() -> None:
    async def main() -> BreakerOpen:
        store = MemoryBreakerStore()
        b = Breaker("ai", BreakerPolicy(min_calls=5, open_s=30), store, flush_s=0)
        for _ in range(5):
            await b.record(await b.allow(), "failure")
        await b.flush()
        assert b.state == OPEN
        with pytest.raises(BreakerOpen) as err:
            await b.allow()
        return err.value

    err = asyncio.run(main())
    assert err.name == "ai" and 29 < err.wait_s <= 30


def test_client_holds_no_lock_during_calls() -> None:
    """Ten concurrent guarded calls of 0.2 s take about 0.2 s, not 2 s."""

    async def main() -> float:
        b = Breaker("ai", BreakerPolicy(), MemoryBreakerStore())

        async def call() -> None:
            permit = await b.allow()
            await asyncio.sleep(0.2)
            await b.record(permit, "success")

        t0 = asyncio.get_running_loop().time()
        await asyncio.gather(*(call() for _ in range(10)))
        return asyncio.get_running_loop().time() - t0

    assert asyncio.run(main()) < 0.6
