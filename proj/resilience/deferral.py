"""Signals that a task should wait, not fail: an open breaker, a rate limit, a 429."""

from __future__ import annotations

from proj.errors import ProjError


class Deferral(ProjError):
    """Come back in ``wait_s`` seconds. :class:`proj.tasks.base.ProjTask` parks the task in
    Redis until then (:mod:`proj.parking`), without using up a retry."""

    wait_s: float = 1.0
    #: Jitter added to the wait, as a fraction of it (wider for 429s, so comebacks spread).
    spread: float = 0.1
