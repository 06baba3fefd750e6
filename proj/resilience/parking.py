"""Where deferred work waits, and how fast it comes back. Pure: no I/O.

A task that must wait (an open breaker, a rate-limit wait, a 429) is acknowledged and parked
in Redis, in a *lot* named after what it waits for, keyed by the time it is due
(:mod:`proj.parking`). Every worker runs a mover that puts due work back on its queue, in
bounded batches, gated by the lot's breaker: nothing while it is open, one task (the probe)
once its open period is over or while it is half-open, then a ramp that doubles each tick
once it has closed. Nothing waits in a worker's memory, so nothing outlives the visibility
timeout there and runs twice, and a long outage's backlog does not come due in one burst.
"""

from __future__ import annotations

from proj.resilience.breaker import CLOSED, FORCED_OPEN, HALF_OPEN, OPEN

BREAKER = "breaker"  # waits for a breaker: gated by its state
LIMIT = "limit"  # waits for a rate-limit slot: due times are already spread
TASK = "task"  # a 429 from the task's own client, with no breaker named


def lot(kind: str, name: str) -> str:
    """The lot's name: ``breaker:ai``, ``limit:crm``, ``task:usertasks.fetch``."""
    return f"{kind}:{name}"


def split(lot_name: str) -> tuple[str, str]:
    kind, _, name = lot_name.partition(":")
    return kind, name


def allowance(
    state: str | None, half_open_at: float | None, now: float, previous: int, batch: int
) -> int:
    """How many due tasks of a lot to move this tick.

    ``state`` is its breaker's (None: the lot has no breaker), ``half_open_at`` when an open
    breaker lets its next probe through, ``previous`` what was moved the tick before.
    """
    if state is None:
        return batch
    if state == FORCED_OPEN:
        return 0
    if state == OPEN:
        return 1 if half_open_at is not None and half_open_at <= now else 0
    if state == HALF_OPEN:
        return 1
    if state == CLOSED:
        return min(batch, max(1, previous * 2))
    return 0
