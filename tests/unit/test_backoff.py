"""The in-process retry backoff: pure rules, no sleeping."""

from __future__ import annotations

import pytest

from proj.errors import ConfigError
from proj.resilience.backoff import Backoff


def test_backoff_doubles_from_base_per_attempt() -> None:
    b = Backoff(base_s=1.0, max_s=1000.0)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_backoff_is_capped_at_max() -> None:
    b = Backoff(base_s=0.25, max_s=2.0)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5, 50)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_backoff_attempt_zero_or_less_waits_the_base() -> None:
    b = Backoff(base_s=1.5, max_s=60.0)
    assert b.delay(0) == b.delay(-3) == b.delay(1) == 1.5


def test_backoff_far_past_the_cap_does_not_overflow() -> None:
    assert Backoff(base_s=1.0, max_s=60.0).delay(100_000) == 60.0


def test_backoff_max_below_base_always_waits_max() -> None:
    assert [Backoff(base_s=5.0, max_s=2.0).delay(n) for n in (1, 2, 3)] == [2.0, 2.0, 2.0]


def test_backoff_factor_other_than_two() -> None:
    assert [Backoff(base_s=1.0, max_s=100.0, factor=3.0).delay(n) for n in (1, 2, 3)] == [
        1.0,
        3.0,
        9.0,
    ]


@pytest.mark.parametrize(
    ("rnd", "expected"),
    [(0.0, 4.0), (0.5, 6.0), (1.0, 8.0)],
)
def test_backoff_jitter_spreads_over_the_top_fraction(rnd: float, expected: float) -> None:
    # attempt 4 of base 1 s: 8 s; jitter 0.5 waits 4..8 s
    assert Backoff(base_s=1.0, max_s=60.0, jitter=0.5).delay(4, rnd) == expected


def test_backoff_jitter_applies_after_the_cap() -> None:
    assert Backoff(base_s=1.0, max_s=10.0, jitter=0.5).delay(20, 0.0) == 5.0


@pytest.mark.parametrize("rnd", [0.0, 0.3, 1.0])
def test_backoff_without_jitter_ignores_rnd(rnd: float) -> None:
    assert Backoff(base_s=2.0, max_s=60.0).delay(3, rnd) == 8.0


def test_backoff_full_jitter_can_wait_nothing() -> None:
    assert Backoff(base_s=1.0, max_s=60.0, jitter=1.0).delay(3, 0.0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_s": 0.0, "max_s": 1.0}, "base_s"),
        ({"base_s": 1.0, "max_s": 0.0}, "max_s"),
        ({"base_s": 1.0, "max_s": 2.0, "jitter": 1.5}, "jitter"),
        ({"base_s": 1.0, "max_s": 2.0, "jitter": -0.1}, "jitter"),
        ({"base_s": 1.0, "max_s": 2.0, "factor": 0.5}, "factor"),
    ],
)
def test_backoff_refuses_a_bad_policy_naming_the_field(
    kwargs: dict[str, float], field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        Backoff(**kwargs)


@pytest.mark.parametrize("rnd", [-0.1, 1.1])
def test_backoff_refuses_a_draw_outside_zero_to_one(rnd: float) -> None:
    with pytest.raises(ValueError, match="rnd"):
        Backoff(base_s=1.0, max_s=2.0, jitter=0.5).delay(1, rnd)


def test_backoff_batch_retry_schedule_matches_the_settings_defaults() -> None:
    # PROJ_RETRY_BACKOFF_S 1 s doubling up to PROJ_RETRY_BACKOFF_MAX_S 60 s, waiting 0.5..1 of it
    b = Backoff(base_s=1.0, max_s=60.0, jitter=0.5)
    assert [b.delay(n, 1.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert [b.delay(n, 0.0) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
