"""Breaker rules as a table of scenarios, run against every store (memory and Redis), in
the style of resilience4j's CircuitBreakerStateMachineTest: one scenario per rule."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from proj.resilience.breaker import CLOSED, FORCED_OPEN, HALF_OPEN, OPEN, BreakerPolicy
from proj.resilience.breaker_store import BreakerStore

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


async def _rec(store: BreakerStore, name: str, t: int, ok: int = 0, failed: int = 0) -> str:
    state, _ = await store.record(name, P, ok=ok, failed=failed, now_ms=t)
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
    state, moved = await store.record(name, P, failed=2, now_ms=T0 + 10)  # 3/11 = 27%
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
    state, moved = await store.record(name, P, failed=1, probe_id="p1", now_ms=T0 + 5_100)
    assert (state, moved) == (OPEN, (HALF_OPEN, OPEN))
    adm = await store.admit(name, P, "p2", now_ms=T0 + 5_200)
    assert adm.verdict == "deny" and abs(adm.wait_s - 4.9) < 0.01


async def successful_probe_closes_and_resets_window(store: BreakerStore, name: str) -> None:
    await _open(store, name)
    await store.admit(name, P, "p1", now_ms=T0 + 5_000)
    state, moved = await store.record(name, P, ok=1, probe_id="p1", now_ms=T0 + 5_100)
    assert (state, moved) == (CLOSED, (HALF_OPEN, CLOSED))
    assert (await store.admit(name, P, "x", now_ms=T0 + 5_200)).verdict == "allow"
    snap = await store.snapshot(name, P, now_ms=T0 + 5_200)
    assert snap.calls == 0


async def ignored_probe_frees_its_slot(store: BreakerStore, name: str) -> None:
    await _open(store, name)
    await store.admit(name, P, "p1", now_ms=T0 + 5_000)
    state, moved = await store.record(name, P, probe_id="p1", now_ms=T0 + 5_100)  # e.g. a 429
    assert (state, moved) == (HALF_OPEN, None)
    assert (await store.admit(name, P, "p2", now_ms=T0 + 5_200)).verdict == "probe"


async def expired_probe_lease_frees_its_slot(store: BreakerStore, name: str) -> None:
    await _open(store, name)
    await store.admit(name, P, "p1", now_ms=T0 + 5_000)  # its worker dies: no report
    assert (await store.admit(name, P, "p2", now_ms=T0 + 7_000)).verdict == "deny"
    assert (await store.admit(name, P, "p3", now_ms=T0 + 8_001)).verdict == "probe"
    state, moved = await store.record(name, P, ok=1, probe_id="p1", now_ms=T0 + 8_100)
    assert (state, moved) == (HALF_OPEN, None)  # the stale probe changes nothing


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


SCENARIOS: list[Scenario] = [
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
    late_results_while_open_are_ignored,
    forced_open_holds_until_closed,
    snapshot_reports_rate_and_half_open_time,
]
