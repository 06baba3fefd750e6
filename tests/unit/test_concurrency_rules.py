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
    raw = {b"o:999": b"5", b"o:1000": b"7", b"f:1000": b"1", b"o:1001": b"3", b"f:1002": b"2"}
    assert window_counts(raw, since) == (3, 2)


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
    assert s.limit == 19  # after slow start, decreases are multiplicative (x0.9, at least -1)


def test_no_growth_until_the_current_size_is_in_use() -> None:
    d = decide(P, 8, ok=100, failed=0, waiting=True, since_change_s=5, in_use=5)
    assert not d.changed and "5 of 8 busy" in d.reason
    assert decide(P, 8, ok=100, failed=0, waiting=True, since_change_s=5, in_use=8).changed
