"""The adaptive controller's rule, scenario by scenario (no servers)."""

from __future__ import annotations

from proj.resilience.concurrency import ConcurrencyPolicy, ControllerState, decide
from proj.resilience.outcomes import BUCKET_MS, window_counts

P = ConcurrencyPolicy(
    start=5, minimum=2, maximum=10, cooldown_s=2, min_samples=20, slow_start=False
)


def _step(limit: int, ok: int, failed: int, waiting: bool = True, since: float = 5.0) -> int:
    return decide(P, limit, ok=ok, failed=failed, waiting=waiting, since_change_s=since).limit


def test_steady_success_grows_to_the_maximum_and_no_further() -> None:
    limit, seen = P.start, []
    for _ in range(20):
        limit = _step(limit, ok=100, failed=0)
        seen.append(limit)
    assert seen[:5] == [6, 7, 8, 9, 10]
    assert set(seen[5:]) == {10}


def test_failure_burst_shrinks_multiplicatively() -> None:
    assert _step(10, ok=80, failed=20) == 9
    wide = ConcurrencyPolicy(start=5, minimum=2, maximum=100)
    d = decide(wide, 40, ok=50, failed=50, waiting=True, since_change_s=5)
    assert (d.limit, d.changed) == (36, True)
    assert "failed, timed out or were rate-limited" in d.reason


def test_never_below_the_minimum() -> None:
    limit = 10
    for _ in range(30):
        limit = _step(limit, ok=0, failed=100)
    assert limit == P.minimum
    assert not decide(P, 2, ok=0, failed=100, waiting=True, since_change_s=5).changed


def test_cooldown_is_respected() -> None:
    d = decide(P, 5, ok=0, failed=100, waiting=True, since_change_s=1.9)
    assert (d.limit, d.changed, d.reason) == (5, False, "cooldown")
    assert decide(P, 5, ok=0, failed=100, waiting=True, since_change_s=2.0).changed


def test_exactly_95_percent_is_not_growth() -> None:
    assert _step(5, ok=95, failed=5) == 4  # 95% is not above 95%: shrink
    assert _step(5, ok=96, failed=4) == 6


def test_no_growth_without_waiting_work() -> None:
    d = decide(P, 5, ok=100, failed=0, waiting=False, since_change_s=5)
    assert not d.changed and "no work waiting" in d.reason


def test_too_few_calls_to_judge_holds() -> None:
    assert not decide(P, 5, ok=19, failed=0, waiting=True, since_change_s=5).changed
    assert not decide(P, 5, ok=0, failed=19, waiting=True, since_change_s=5).changed


def test_out_of_bounds_is_clamped_first() -> None:
    d = decide(P, 50, ok=0, failed=0, waiting=False, since_change_s=0)
    assert (d.limit, d.changed) == (10, True)


def test_window_counts_only_whole_buckets_after_the_change() -> None:
    since = 1_000 * BUCKET_MS + 50  # a change in the middle of bucket 1000
    raw = {b"o:999": b"5", b"o:1000": b"7", b"f:1000": b"1", b"o:1001": b"3", b"f:1002": b"2",
           b"l:1002": b"1"}  # fmt: skip
    assert window_counts(raw, since) == (3, 2, 1)


def test_slow_start_doubles_then_falls_back_to_the_last_size_that_held() -> None:
    p = ConcurrencyPolicy(start=5, minimum=2, maximum=100, min_samples=20)
    s = ControllerState(5, slow_start=True)
    sizes = []
    for ok, failed in [(100, 0), (100, 0), (100, 0), (50, 50), (100, 0), (100, 0)]:
        s = decide(p, s, ok=ok, failed=failed, waiting=True, since_change_s=5).state
        sizes.append(s.limit)
    assert sizes == [10, 20, 40, 20, 21, 22]  # doubling, back to 20, then +1 at a time
    assert not s.slow_start
    s = decide(p, s, ok=10, failed=90, waiting=True, since_change_s=5).state
    assert s.limit == 21  # a step up that fails goes back to the size that held
    s = decide(p, s, ok=100, failed=0, waiting=False, since_change_s=5).state  # 21 holds
    s = decide(p, s, ok=10, failed=90, waiting=True, since_change_s=5).state
    assert s.limit == 18  # a size that held and now fails shrinks multiplicatively (x0.9)


def test_no_growth_until_the_current_size_is_in_use() -> None:
    d = decide(P, 8, ok=100, failed=0, waiting=True, since_change_s=5, in_use=5)
    assert not d.changed and "5 of 8 busy" in d.reason
    assert decide(P, 8, ok=100, failed=0, waiting=True, since_change_s=5, in_use=8).changed


W = ConcurrencyPolicy(start=5, minimum=2, maximum=100, cooldown_s=2, min_samples=20,
                      ceiling_hold_s=10)  # fmt: skip


def test_first_429s_of_a_step_up_send_it_back_at_once() -> None:
    s = ControllerState(41, slow_start=False, last_good=40)
    d = decide(W, s, ok=3, failed=2, overloaded=2, waiting=True, since_change_s=0.1)
    assert d.changed and (d.state.limit, d.state.ceiling) == (40, 41)  # no cooldown, no samples
    assert "2 calls overloaded (429) at 41: back to 40" in d.reason
    one = decide(W, s, ok=3, failed=1, overloaded=1, waiting=True, since_change_s=0.1)
    assert not one.changed  # a single 429 is not yet a burst


def test_growth_stops_below_the_ceiling_and_holds_before_probing_it() -> None:
    s = ControllerState(30, slow_start=False, last_good=30, ceiling=41)
    d = decide(W, s, ok=100, failed=0, waiting=True, since_change_s=5)
    assert d.state.limit == 35  # far below: halfway to the ceiling
    s = ControllerState(38, slow_start=False, last_good=38, ceiling=41)
    assert decide(W, s, ok=100, failed=0, waiting=True, since_change_s=5).state.limit == 39
    s = ControllerState(40, slow_start=False, last_good=39, ceiling=41)
    held = decide(W, s, ok=100, failed=0, waiting=True, since_change_s=5)
    assert not held.changed and "holding below the ceiling of 41" in held.reason
    probe = decide(W, held.state, ok=100, failed=0, waiting=True, since_change_s=10)
    assert probe.changed and probe.state.limit == 41 and probe.state.last_good == 40


def test_slow_start_stops_one_below_a_known_ceiling() -> None:
    s = ControllerState(10, slow_start=True, last_good=5, ceiling=30)
    assert decide(W, s, ok=100, failed=0, waiting=True, since_change_s=5).state.limit == 20
    s = ControllerState(20, slow_start=True, last_good=10, ceiling=30)
    assert decide(W, s, ok=100, failed=0, waiting=True, since_change_s=5).state.limit == 29


def test_a_ceiling_probe_that_holds_clears_the_ceiling() -> None:
    s = ControllerState(41, slow_start=False, last_good=40, ceiling=41)
    d = decide(W, s, ok=100, failed=0, waiting=True, since_change_s=5)
    assert d.state.ceiling == 0 and d.state.limit == 42  # the capacity grew: grow again


def test_repeated_429s_at_a_size_that_holds_step_it_down() -> None:
    s = ControllerState(42, slow_start=False, last_good=42)
    d = decide(W, s, ok=97, failed=3, overloaded=3, waiting=True, since_change_s=5)
    assert d.changed and (d.state.limit, d.state.ceiling) == (41, 42)


def test_a_few_429s_at_a_size_that_held_step_down_by_one_not_a_tenth() -> None:
    s = ControllerState(41, slow_start=False, last_good=41)
    d = decide(W, s, ok=34, failed=2, overloaded=2, waiting=True, since_change_s=5)
    assert (d.state.limit, d.state.ceiling) == (40, 41)
    many = decide(W, s, ok=20, failed=16, overloaded=16, waiting=True, since_change_s=5)
    assert many.state.limit == 36  # the capacity dropped: x0.9
    errors = decide(W, s, ok=34, failed=2, overloaded=0, waiting=True, since_change_s=5)
    assert errors.state.limit == 36  # 5xx or timeouts: x0.9


def test_slow_start_judges_a_small_pool_on_one_call_per_slot() -> None:
    s = ControllerState(5, slow_start=True)
    assert decide(W, s, ok=5, failed=0, waiting=True, since_change_s=5).state.limit == 10
    after = ControllerState(5, slow_start=False)  # past slow start: min_samples again
    assert not decide(W, after, ok=19, failed=0, waiting=True, since_change_s=5).changed


def test_a_size_not_yet_in_use_stays_on_trial() -> None:
    s = ControllerState(80, slow_start=True, last_good=40)
    d = decide(W, s, ok=30, failed=0, waiting=True, since_change_s=5, in_use=50)
    assert not d.changed and d.state.probing  # 50 of 80 busy: 80 has not held yet
    back = decide(W, d.state, ok=30, failed=9, overloaded=9, waiting=True, since_change_s=5)
    assert back.state.limit == 40
