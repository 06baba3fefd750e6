"""Breaker rules as a table of scenarios, run against every store (memory and Redis), in
the style of resilience4j's CircuitBreakerStateMachineTest: one scenario per rule."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from proj.resilience.breaker import CLOSED, FORCED_OPEN, HALF_OPEN, OPEN, BreakerPolicy
from proj.resilience.breaker_store import AsyncBreakerStore as BreakerStore

P = BreakerPolicy(
    failure_rate=0.2,
    window_s=10,
    window_buckets=10,
    min_calls=10,
    open_s=5,
    probes=1,
    probe_lease_s=3,
    half_open_wait_s=1,
)
T0 = 1_000_000_000_000  # ms
Scenario = Callable[[BreakerStore, str], Awaitable[None]]


async def _r(store: BreakerStore, *args: Any, **kwargs: Any) -> tuple[str, tuple[str, str] | None]:
    """(state, transition) of a record; the wait it returns has scenarios of its own."""
    state, moved, _ = await store.record(*args, **kwargs)
    return state, moved


async def _rec(store: BreakerStore, name: str, t: int, ok: int = 0, failed: int = 0) -> str:
    state, _ = await _r(store, name, P, ok=ok, failed=failed, now_ms=t)
    return state


async def _open(store: BreakerStore, name: str, t: int = T0) -> None:
    assert await _rec(store, name, t, ok=7, failed=3) == OPEN


async def below_min_calls_never_opens(store: BreakerStore, name: str) -> None:
    assert await _rec(store, name, T0, failed=9) == CLOSED
    assert (await store.admit(name, P, "p", now_ms=T0)).verdict == "allow"


async def exactly_threshold_does_not_open(store: BreakerStore, name: str) -> None:
    assert await _rec(store, name, T0, ok=8, failed=2) == CLOSED  # 20.0%


async def above_threshold_opens(store: BreakerStore, name: str) -> None:
    assert await _rec(store, name, T0, ok=8, failed=1) == CLOSED
    state, moved = await _r(store, name, P, failed=2, now_ms=T0 + 10)  # 3/11 = 27%
    assert (state, moved) == (OPEN, (CLOSED, OPEN))


async def window_forgets_old_calls(store: BreakerStore, name: str) -> None:
    assert await _rec(store, name, T0, failed=5) == CLOSED  # 5 calls: below the minimum
    # 11 s later those five have left the window: 6 calls, still below the minimum.
    assert await _rec(store, name, T0 + 11_000, ok=5, failed=1) == CLOSED


async def window_counts_recent_buckets(store: BreakerStore, name: str) -> None:
    assert await _rec(store, name, T0, failed=5) == CLOSED
    assert await _rec(store, name, T0 + 5_000, ok=5, failed=1) == OPEN  # 6/11 within 10 s


async def open_denies_until_open_time_passes(store: BreakerStore, name: str) -> None:
    await _open(store, name)
    adm = await store.admit(name, P, "p1", now_ms=T0 + 1_000)
    assert (adm.verdict, adm.state) == ("deny", OPEN)
    assert abs(adm.wait_s - 4.0) < 0.01


async def half_open_admits_only_its_probes(store: BreakerStore, name: str) -> None:
    await _open(store, name)
    first = await store.admit(name, P, "p1", now_ms=T0 + 5_000)
    assert (first.verdict, first.probe_id, first.transition) == ("probe", "p1", (OPEN, HALF_OPEN))
    second = await store.admit(name, P, "p2", now_ms=T0 + 5_001)
    assert (second.verdict, second.state) == ("deny", HALF_OPEN)
    assert 0 < second.wait_s <= P.half_open_wait_s


async def failed_probe_reopens(store: BreakerStore, name: str) -> None:
    await _open(store, name)
    await store.admit(name, P, "p1", now_ms=T0 + 5_000)
    state, moved = await _r(store, name, P, failed=1, probe_id="p1", now_ms=T0 + 5_100)
    assert (state, moved) == (OPEN, (HALF_OPEN, OPEN))
    adm = await store.admit(name, P, "p2", now_ms=T0 + 5_200)
    assert adm.verdict == "deny" and abs(adm.wait_s - 4.9) < 0.01


async def successful_probe_closes_and_resets_window(store: BreakerStore, name: str) -> None:
    await _open(store, name)
    await store.admit(name, P, "p1", now_ms=T0 + 5_000)
    state, moved = await _r(store, name, P, ok=1, probe_id="p1", now_ms=T0 + 5_100)
    assert (state, moved) == (CLOSED, (HALF_OPEN, CLOSED))
    assert (await store.admit(name, P, "x", now_ms=T0 + 5_200)).verdict == "allow"
    snap = await store.snapshot(name, P, now_ms=T0 + 5_200)
    assert snap.calls == 0


async def ignored_probe_frees_its_slot(store: BreakerStore, name: str) -> None:
    await _open(store, name)
    await store.admit(name, P, "p1", now_ms=T0 + 5_000)
    state, moved = await _r(store, name, P, probe_id="p1", now_ms=T0 + 5_100)  # e.g. a 429
    assert (state, moved) == (HALF_OPEN, None)
    assert (await store.admit(name, P, "p2", now_ms=T0 + 5_200)).verdict == "probe"


async def expired_probe_lease_frees_its_slot(store: BreakerStore, name: str) -> None:
    await _open(store, name)
    await store.admit(name, P, "p1", now_ms=T0 + 5_000)  # its worker dies: no report
    assert (await store.admit(name, P, "p2", now_ms=T0 + 7_000)).verdict == "deny"
    assert (await store.admit(name, P, "p3", now_ms=T0 + 8_001)).verdict == "probe"


async def a_probe_past_its_lease_still_counts_while_half_open(
    store: BreakerStore, name: str
) -> None:
    await _open(store, name)
    await store.admit(name, P, "slow", now_ms=T0 + 5_000)  # a long task: lease ends at 8 s
    assert (await store.admit(name, P, "p2", now_ms=T0 + 8_001)).verdict == "probe"
    state, moved = await _r(store, name, P, ok=1, probe_id="slow", now_ms=T0 + 9_000)
    assert (state, moved) == (CLOSED, (HALF_OPEN, CLOSED))  # the slow probe's success closes it
    assert await _r(store, name, P, ok=1, probe_id="p2", now_ms=T0 + 9_100) == (CLOSED, None)


async def record_says_how_long_an_open_breaker_stays_open(store: BreakerStore, name: str) -> None:
    await _open(store, name)
    _, _, wait = await store.record(name, P, ok=3, now_ms=T0 + 1_500)  # late results
    assert abs(wait - 3.5) < 0.01  # opened at T0 for 5 s: 3.5 s left, not 5
    _, _, wait = await store.record(name, P, ok=3, now_ms=T0 + 6_000)
    assert wait == 0


async def late_results_while_open_are_ignored(store: BreakerStore, name: str) -> None:
    await _open(store, name)
    assert await _rec(store, name, T0 + 100, ok=50) == OPEN
    assert (await store.admit(name, P, "p", now_ms=T0 + 200)).verdict == "deny"


async def forced_open_holds_until_closed(store: BreakerStore, name: str) -> None:
    assert await store.force(name, FORCED_OPEN, now_ms=T0) == (CLOSED, FORCED_OPEN)
    adm = await store.admit(name, P, "p", now_ms=T0 + 3_600_000)
    assert (adm.verdict, adm.state) == ("deny", FORCED_OPEN)
    assert await store.force(name, CLOSED, now_ms=T0 + 3_600_001) == (FORCED_OPEN, CLOSED)
    assert (await store.admit(name, P, "p", now_ms=T0 + 3_600_002)).verdict == "allow"


async def snapshot_reports_rate_and_half_open_time(store: BreakerStore, name: str) -> None:
    assert await _rec(store, name, T0, ok=9, failed=1) == CLOSED
    snap = await store.snapshot(name, P, now_ms=T0 + 1)
    assert (snap.state, snap.calls, snap.failures) == (CLOSED, 10, 1)
    assert abs(snap.failure_rate - 0.1) < 1e-9
    await _rec(store, name, T0 + 2, failed=5)
    snap = await store.snapshot(name, P, now_ms=T0 + 3)
    assert snap.state == OPEN and snap.half_open_at == (T0 + 2 + 5_000) / 1000


FM = P.model_copy(update={"fail_max": 3, "success_threshold": 2})


async def fail_max_opens_after_that_many_failures_in_a_row(store: BreakerStore, name: str) -> None:
    assert (await _r(store, name, FM, failed=2, now_ms=T0))[0] == CLOSED
    assert (await _r(store, name, FM, ok=1, now_ms=T0 + 1))[0] == CLOSED  # resets the run
    assert (await _r(store, name, FM, failed=2, now_ms=T0 + 2))[0] == CLOSED
    state, moved = await _r(store, name, FM, failed=1, now_ms=T0 + 3)
    assert (state, moved) == (OPEN, (CLOSED, OPEN))
    assert (await store.snapshot(name, FM, now_ms=T0 + 4)).fail_counter == 3


async def fail_max_ignores_the_rate(store: BreakerStore, name: str) -> None:
    # 2 failures in 2 calls is 100%, above any rate, but not 3 in a row.
    assert (await _r(store, name, FM, failed=1, now_ms=T0))[0] == CLOSED
    assert (await _r(store, name, FM, failed=1, now_ms=T0 + 1))[0] == CLOSED


async def success_threshold_needs_that_many_probes(store: BreakerStore, name: str) -> None:
    await _r(store, name, FM, failed=3, now_ms=T0)
    assert (await store.admit(name, FM, "p1", now_ms=T0 + 5_000)).verdict == "probe"
    assert await _r(store, name, FM, ok=1, probe_id="p1", now_ms=T0 + 5_010) == (HALF_OPEN, None)
    assert (await store.admit(name, FM, "p2", now_ms=T0 + 5_020)).verdict == "probe"
    state, moved = await _r(store, name, FM, ok=1, probe_id="p2", now_ms=T0 + 5_030)
    assert (state, moved) == (CLOSED, (HALF_OPEN, CLOSED))
    snap = await store.snapshot(name, FM, now_ms=T0 + 5_040)
    assert (snap.fail_counter, snap.success_counter) == (0, 0)


async def forcing_open_starts_an_open_period(store: BreakerStore, name: str) -> None:
    assert await store.force(name, OPEN, now_ms=T0) == (CLOSED, OPEN)
    assert (await store.admit(name, P, "p", now_ms=T0 + 4_000)).verdict == "deny"
    assert (await store.admit(name, P, "p", now_ms=T0 + 5_000)).verdict == "probe"


async def forcing_half_open_admits_one_probe(store: BreakerStore, name: str) -> None:
    assert await store.force(name, HALF_OPEN, now_ms=T0) == (CLOSED, HALF_OPEN)
    assert (await store.admit(name, P, "p1", now_ms=T0 + 1)).verdict == "probe"
    assert (await store.admit(name, P, "p2", now_ms=T0 + 2)).verdict == "deny"


async def closing_resets_every_count(store: BreakerStore, name: str) -> None:
    await _r(store, name, FM, failed=2, now_ms=T0)
    assert await store.force(name, CLOSED, now_ms=T0 + 1) is None  # it was closed already
    snap = await store.snapshot(name, FM, now_ms=T0 + 2)
    assert (snap.state, snap.fail_counter, snap.calls) == (CLOSED, 0, 0)


SCENARIOS: list[Scenario] = [
    fail_max_opens_after_that_many_failures_in_a_row,
    fail_max_ignores_the_rate,
    success_threshold_needs_that_many_probes,
    forcing_open_starts_an_open_period,
    forcing_half_open_admits_one_probe,
    closing_resets_every_count,
    below_min_calls_never_opens,
    exactly_threshold_does_not_open,
    above_threshold_opens,
    window_forgets_old_calls,
    window_counts_recent_buckets,
    open_denies_until_open_time_passes,
    half_open_admits_only_its_probes,
    failed_probe_reopens,
    successful_probe_closes_and_resets_window,
    ignored_probe_frees_its_slot,
    expired_probe_lease_frees_its_slot,
    a_probe_past_its_lease_still_counts_while_half_open,
    record_says_how_long_an_open_breaker_stays_open,
    late_results_while_open_are_ignored,
    forced_open_holds_until_closed,
    snapshot_reports_rate_and_half_open_time,
]
