"""The mover: puts parked (deferred) task messages back on their queues once they are due.

Every worker runs one (the ``ParkingMover`` bootstep in :mod:`proj.worker`), every
PROJ_PARKING_TICK_S. Movers on many workers share the work: each due entry is claimed by
exactly one (see :mod:`proj.parking`). How many of a lot move per tick is
:func:`proj.resilience.parking.allowance` of its breaker's state.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from kombu.utils.json import loads

from proj.parking import Parking
from proj.resilience import parking
from proj.resilience.breaker import BreakerPolicy
from proj.resilience.breaker_store import RedisBreakerStore
from proj.settings import Settings

logger = logging.getLogger("proj.mover")

POLICY_REFRESH_S = 10.0


class BreakerStates:
    """A breaker's state and next probe time, read from the shared store without making a
    breaker (that would register it with this process's options)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.store = RedisBreakerStore(client)
        self.settings = settings
        self._registered: dict[str, str] = {}
        self._read_at = -POLICY_REFRESH_S

    def policy(self, name: str) -> BreakerPolicy | None:
        """None for a plain pybreaker breaker: its rule lives in its code, so its lot is not
        gated (pybreaker opens its half-open state on a call)."""
        now = time.monotonic()
        if now - self._read_at >= POLICY_REFRESH_S:
            self._registered = self.store.registered()
            self._read_at = now
        raw = self._registered.get(name)
        if raw is None:
            return self.settings.breaker_policy(name)
        try:
            data = json.loads(raw)
            return None if data.get("rule") == "pybreaker" else BreakerPolicy(**data)
        except (ValueError, TypeError):
            return self.settings.breaker_policy(name)

    def __call__(self, name: str) -> tuple[str | None, float | None]:
        policy = self.policy(name)
        if policy is None or not self.settings.breaker.enabled:
            return None, None
        snap = self.store.snapshot(name, policy)
        return snap.state, snap.half_open_at


class Mover:
    def __init__(
        self,
        publish: Callable[[str], None],
        store: Parking,
        breaker_state: Callable[[str], tuple[str | None, float | None]],
        *,
        batch: int,
        lease_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.publish = publish
        self.store = store
        self.breaker_state = breaker_state
        self.batch = batch
        self.lease_s = lease_s
        self.clock = clock
        self.allowed: dict[str, int] = {}
        self.moved = 0
        self._warned_at = 0.0

    def tick(self) -> int:
        """Move what is due; never raises (a worker must not die of its mover)."""
        try:
            return self._tick()
        except Exception as err:
            now = time.monotonic()
            if now - self._warned_at > 30:
                self._warned_at = now
                logger.warning("parked work not moved this time: %s: %s", type(err).__name__, err)
            return 0

    def _tick(self) -> int:
        moved = 0
        for lot in self.store.lots():
            now = self.clock()
            self.store.recover(lot, now)
            kind, name = parking.split(lot)
            state, half_open_at = (
                self.breaker_state(name) if kind == parking.BREAKER else (None, None)
            )
            n = parking.allowance(state, half_open_at, now, self.allowed.get(lot, 0), self.batch)
            self.allowed[lot] = n
            claimed = self.store.claim(lot, now, n, self.lease_s)
            if not claimed:
                self.store.drop_empty(lot)
                continue
            done: list[str] = []
            try:
                for entry_id, message in claimed:
                    self.publish(message)
                    done.append(entry_id)
            finally:
                self.store.release(lot, done)
                rest = [i for i, _ in claimed if i not in set(done)]
                self.store.unclaim(lot, rest, now)  # the publish failed: due again at once
            moved += len(done)
        self.moved += moved
        return moved


def publisher(app: Any) -> Callable[[str], None]:
    """Publish a parked signature (kombu's JSON of its dict) again, with its task id and
    options."""

    def publish(message: str) -> None:
        app.signature(loads(message)).apply_async()

    return publish
