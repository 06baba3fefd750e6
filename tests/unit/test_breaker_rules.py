"""The breaker's rules on the in-memory store, and the per-process client's behaviour."""

from __future__ import annotations

import asyncio

import pytest

from proj.guard.breaker import Breaker
from proj.guard.request_rules import classify_status
from proj.resilience.breaker import OPEN, BreakerOpen, BreakerPolicy, jitter_wait
from proj.resilience.breaker_store import AsyncAdapter, MemoryBreakerStore
from tests.breaker_scenarios import SCENARIOS, Scenario


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_breaker_rule_memory(scenario: Scenario) -> None:
    asyncio.run(scenario(AsyncAdapter(MemoryBreakerStore()), "dep"))


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, ("success", True)),
        (404, ("ignored", None)),
        (429, ("ignored", False)),
        (408, ("failure", False)),
        (500, ("failure", False)),
        (503, ("failure", False)),
    ],
)
def test_classify_status_what_counts(status: int, outcome: tuple[str, bool | None]) -> None:
    assert classify_status(status) == outcome


def test_jitter_wait_bounds() -> None:
    assert jitter_wait(5.0, 0.0, 100) == 5.0
    assert 5.0 <= jitter_wait(5.0, 0.99, 100) <= 5.5
    assert jitter_wait(5.0, 0.5, 3.0) == 3.0
    assert 0 <= jitter_wait(0.0, 0.5, 10) <= 0.1


def _breaker(policy: BreakerPolicy) -> Breaker:
    store = MemoryBreakerStore()
    return Breaker("ai", policy, store, lambda: AsyncAdapter(store))


def test_breaker_ignored_outcomes_do_not_open_it() -> None:
    b = _breaker(BreakerPolicy(min_calls=5))
    for _ in range(50):
        b.record(b.admit(), "ignored")
    b.flush()
    assert b.current_state == "closed"


def test_breaker_opens_on_the_rate_then_denies_locally_with_the_wait() -> None:
    b = _breaker(BreakerPolicy(min_calls=5, open_s=30))
    for _ in range(5):
        b.record(b.admit(), "failure")
    b.flush()
    assert b.current_state == OPEN
    with pytest.raises(BreakerOpen) as err:
        b.admit()
    assert err.value.name == "ai" and 29 < err.value.wait_s <= 30


def test_breaker_sends_ordinary_outcomes_in_batches() -> None:
    b = _breaker(BreakerPolicy(min_calls=5))
    for _ in range(4):
        b.record(b.admit(), "success")
    assert b.metrics().calls == 0  # buffered
    b.flush()
    assert b.metrics().calls == 4


def test_breaker_counts_control_flow_neither_way() -> None:
    b = _breaker(BreakerPolicy(fail_max=1))
    for exc in (asyncio.CancelledError(), BreakerOpen("x", 1.0), KeyboardInterrupt()):
        assert b.classify(exc) == "ignored"
    assert b.classify(ValueError()) == "failure"
    assert b.classify(None) == "success"


def test_breaker_switched_off_admits_everything_and_counts_nothing() -> None:
    b = _breaker(BreakerPolicy(fail_max=1))
    b.enabled = False
    for _ in range(3):
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)
    assert b.current_state == "closed" and b.fail_counter == 0
