"""How fast parked (deferred) work comes back: pure rules, no Redis."""

from __future__ import annotations

import pytest

from proj.resilience import parking
from proj.resilience.breaker import CLOSED, FORCED_OPEN, HALF_OPEN, OPEN


def test_lot_names_round_trip() -> None:
    assert parking.lot(parking.BREAKER, "ai") == "breaker:ai"
    assert parking.split("breaker:ai") == ("breaker", "ai")
    assert parking.split("task:usertasks.fetch") == ("task", "usertasks.fetch")
    assert parking.split("limit:a:b") == ("limit", "a:b")


def test_a_lot_without_a_breaker_moves_a_full_batch() -> None:
    assert parking.allowance(None, None, now=10.0, previous=0, batch=50) == 50


@pytest.mark.parametrize("half_open_at", [None, 11.0])
def test_nothing_moves_while_the_breaker_is_open(half_open_at: float | None) -> None:
    assert parking.allowance(OPEN, half_open_at, now=10.0, previous=50, batch=50) == 0


def test_forced_open_moves_nothing_even_past_its_probe_time() -> None:
    assert parking.allowance(FORCED_OPEN, 5.0, now=10.0, previous=1, batch=50) == 0


def test_one_probe_once_the_open_period_is_over() -> None:
    assert parking.allowance(OPEN, 10.0, now=10.0, previous=0, batch=50) == 1
    assert parking.allowance(OPEN, 9.0, now=10.0, previous=0, batch=50) == 1


def test_one_at_a_time_while_half_open() -> None:
    assert parking.allowance(HALF_OPEN, None, now=10.0, previous=1, batch=50) == 1


def test_closed_ramps_by_doubling_up_to_the_batch() -> None:
    moved, ramp = 1, []
    for _ in range(8):
        moved = parking.allowance(CLOSED, None, now=10.0, previous=moved, batch=50)
        ramp.append(moved)
    assert ramp == [2, 4, 8, 16, 32, 50, 50, 50]
    assert parking.allowance(CLOSED, None, now=10.0, previous=0, batch=50) == 1


def test_an_unknown_state_moves_nothing() -> None:
    assert parking.allowance("bogus", None, now=10.0, previous=5, batch=50) == 0
