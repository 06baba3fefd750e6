"""Cancelled time-limit timers leave the worker's timer heap (proj/timer_heap.py), on kombu's own
Timer and Hub: what is left still fires, in order."""

from __future__ import annotations

from kombu.asynchronous import Hub
from kombu.asynchronous.timer import Timer

from proj.app import app
from proj.timer_heap import MIN_ENTRIES, TimerCompaction, compact


def _schedule(timer: Timer, n: int, fired: list[int]) -> list[object]:
    # All due at once (times on the monotonic clock, long past), in the order of i.
    return [timer.call_at(-1e6 + i, fired.append, (i,)) for i in range(n)]


def _fire_all(timer: Timer) -> None:
    for _, entry in iter(timer):
        if entry is None:
            break
        entry()


def test_cancelled_entries_are_dropped_once_they_are_most_of_the_heap() -> None:
    timer, fired = Timer(), []
    n = 2 * MIN_ENTRIES
    entries = _schedule(timer, n, fired)
    kept = set(range(0, n, 4))  # a quarter stays
    for i, entry in enumerate(entries):
        if i not in kept:
            timer.cancel(entry)
    assert compact(timer._queue) == n - len(kept)
    assert len(timer) == len(kept)
    _fire_all(timer)
    assert fired == sorted(kept)


def test_a_heap_of_mostly_live_entries_or_a_small_one_is_left_alone() -> None:
    timer, fired = Timer(), []
    entries = _schedule(timer, 2 * MIN_ENTRIES, fired)
    for entry in entries[: MIN_ENTRIES - 1]:  # just under half cancelled
        timer.cancel(entry)
    assert compact(timer._queue) == 0 and len(timer) == 2 * MIN_ENTRIES
    small = Timer()
    for entry in _schedule(small, MIN_ENTRIES - 1, []):
        small.cancel(entry)
    assert compact(small._queue) == 0 and len(small) == MIN_ENTRIES - 1


def test_the_step_compacts_the_hub_s_own_timer_and_proj_s_workers_have_it() -> None:
    hub = Hub()
    try:
        step = TimerCompaction.__new__(TimerCompaction)
        step.register_with_event_loop(None, hub)
        before = len(hub.timer)  # the step's own repeating entry
        for entry in [hub.call_later(300, lambda: None) for _ in range(MIN_ENTRIES)]:
            entry.cancel()
        TimerCompaction.tick(hub.timer)
        assert len(hub.timer) == before
    finally:
        hub.close()
    assert any(s is TimerCompaction for s in app.steps["worker"])
