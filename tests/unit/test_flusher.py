"""The flusher thread (proj/guard/flusher.py): each member is sent at its own interval, and a
slow member never holds back a fast one. No Redis: the members here only count."""

from __future__ import annotations

import threading
import time

from proj.guard import flusher
from tests.support import wait_until


class Member:
    def __init__(self, interval_s: float | None = None) -> None:
        if interval_s is not None:
            self.flush_interval_s = interval_s
        self.lock = threading.Lock()
        self.pending = 0
        self.sent: list[int] = []

    def add(self) -> None:
        with self.lock:
            self.pending += 1
        flusher.poke()

    def flush(self) -> None:
        with self.lock:
            n, self.pending = self.pending, 0
        if n:
            self.sent.append(n)


def test_a_slow_member_is_sent_less_often_and_nothing_is_left_behind() -> None:
    fast, slow = Member(), Member(interval_s=0.5)
    flusher.register(fast)
    flusher.register(slow)
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        fast.add()
        slow.add()
        time.sleep(0.005)
    wait_until(lambda: fast.pending == 0 and slow.pending == 0, 10, "everything to be sent")
    assert sum(fast.sent) == sum(slow.sent)  # every count of both, once
    assert len(slow.sent) <= 3 < len(fast.sent)


def test_a_fast_member_is_not_held_back_by_a_slow_one() -> None:
    fast, slow = Member(), Member(interval_s=60.0)
    flusher.register(fast)
    flusher.register(slow)
    slow.add()
    wait_until(lambda: slow.sent == [1], 10, "the slow member's first flush")
    slow.add()  # not due for a minute
    fast.add()
    wait_until(lambda: fast.sent == [1], 10, "the fast member, well before the slow one is due")
    assert slow.sent == [1] and slow.pending == 1
    flusher.flush_all()  # a process about to exit sends everything
    assert slow.sent == [1, 1] and slow.pending == 0
