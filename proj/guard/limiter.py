"""A global rate limit as a caller uses it: ``acquire()`` before a call (sleeping until its
reserved slot, or raising :class:`RateLimitWait` when that is too far off) and ``push()``
after a 429. ``aacquire()`` / ``apush()`` for asyncio callers. Shared by every process on
every host through :mod:`proj.resilience.ratelimit_store` (GCRA on the Redis server's clock).

A caller that wakes up well after its slot (a loaded machine does not run it on time) does not
use the stale slot: sending then would crowd the next caller's slot, and the provider would see
two calls where the limit allows one. It reserves a new slot instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

import redis

from proj.guard import callstats
from proj.resilience import steps
from proj.resilience.ratelimit import RateLimit, RateLimitWait, Reservation
from proj.resilience.ratelimit_store import AsyncLimiterStore, LimiterStore

logger = logging.getLogger("proj.ratelimit")

#: A caller that keeps waking late sends on its last reservation rather than starve.
MAX_RESERVATIONS = 3

#: What the store may raise when Redis is unreachable; the limiter then does not limit.
STORE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


@dataclass(frozen=True)
class Wait:
    """A step of the acquire loop: sleep ``s`` seconds."""

    s: float


class Limiter:
    """One named limit in one process. ``limit`` None: no rate, but 429 pushes still hold
    every caller off (checked at most every ``cache_s``)."""

    def __init__(
        self,
        name: str,
        limit: RateLimit | None,
        store: LimiterStore,
        astore: Callable[[], AsyncLimiterStore] | None = None,
        *,
        max_wait_s: float = 5.0,
        cache_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.limit = limit
        self.store = store
        self._astore = astore
        self.max_wait_s = max_wait_s
        self.cache_s = cache_s
        self.clock = clock
        self.sleep = sleep
        self.asleep = asleep
        self._clear_until = 0.0  # unlimited dependency: no push seen until then
        # Later than this after its slot, a caller takes a new one (a quarter of the interval,
        # at least 5 ms: finer than that, the clocks and the network blur it anyway).
        self.late_s = max(0.005, limit.interval_ms / 4000) if limit else float("inf")
        self.stale_slots = 0  # slots given up because this process woke too late
        self._warned_at = -1e9

    def __repr__(self) -> str:
        return f"<proj.Limiter {self.name!r} {self.limit or 'no rate'}>"

    @property
    def astore(self) -> AsyncLimiterStore:
        if self._astore is None:
            raise RuntimeError(f"limiter {self.name!r} has no asyncio store")
        return self._astore()

    def _unlimited_now(self) -> bool:
        return self.limit is None and self.clock() < self._clear_until

    def _due(self, r: Reservation) -> float | None:
        """When a reservation is due (on ``clock``): None when there is nothing to wait for."""
        wait = r.wait_ms / 1000
        if not r.granted:
            raise RateLimitWait(self.name, wait)
        if self.limit is None and wait == 0:
            self._clear_until = self.clock() + self.cache_s
            return None
        return self.clock() + wait

    def _late(self, due: float) -> bool:
        late = self.clock() - due
        if late <= self.late_s:
            return False
        self.stale_slots += 1
        logger.debug("rate limit %s: woke %.0f ms late; new slot", self.name, late * 1000)
        return True

    def _acquiring(self, max_wait_s: float | None) -> Generator[Wait | float, Any, float]:
        """The acquire loop, once for both callers (:mod:`proj.resilience.steps`): yields a
        :class:`Wait` for a sleep and a ``float`` (ms of wait allowed) for a reservation,
        whose answer (or store error) is sent back in; returns the seconds waited."""
        if self._unlimited_now():
            return 0.0
        limit_s = self.max_wait_s if max_wait_s is None else max_wait_s
        waited = 0.0
        for attempt in range(MAX_RESERVATIONS):
            try:
                r = yield limit_s * 1000
            except STORE_ERRORS as exc:
                self._warn("store unreachable; not limiting", exc)
                return waited
            due = self._due(r)
            if due is None:
                return waited
            wait = due - self.clock()
            if wait > 0:
                yield Wait(wait)
                waited += wait
            if attempt == MAX_RESERVATIONS - 1 or not self._late(due):
                return waited
        return waited

    def acquire(self, max_wait_s: float | None = None) -> float:
        """Wait for a slot; returns the seconds waited. Raises :class:`RateLimitWait` when
        the slot is more than ``max_wait_s`` (default: the limiter's) away."""
        try:
            waited = steps.run(self._acquiring(max_wait_s), self._step, STORE_ERRORS)
        except RateLimitWait:
            callstats.stats().deferred(self.name)
            raise
        return self._granted(waited)

    async def aacquire(self, max_wait_s: float | None = None) -> float:
        """:meth:`acquire` for asyncio callers."""
        try:
            waited = await steps.arun(self._acquiring(max_wait_s), self._astep, STORE_ERRORS)
        except RateLimitWait:
            callstats.stats().deferred(self.name)
            raise
        return self._granted(waited)

    def _granted(self, waited: float) -> float:
        if self.limit is not None:  # a limit with no rate grants nothing: it only holds off
            callstats.stats().granted(self.name, waited)
        return waited

    def _step(self, step: Wait | float) -> Reservation | None:
        if isinstance(step, Wait):
            self.sleep(step.s)
            return None
        return self.store.acquire(self.name, self.limit, step)

    async def _astep(self, step: Wait | float) -> Reservation | None:
        if isinstance(step, Wait):
            await self.asleep(step.s)
            return None
        return await self.astore.acquire(self.name, self.limit, step)

    def push(self, retry_after_s: float) -> None:
        """Everyone holds off for ``retry_after_s`` (a 429's Retry-After)."""
        self._clear_until = 0.0
        try:
            self.store.push(self.name, self.limit, retry_after_s * 1000)
        except STORE_ERRORS as exc:
            self._warn("could not push", exc)
            return
        logger.info("rate limit %s: 429, all workers hold off %.2fs", self.name, retry_after_s)

    async def apush(self, retry_after_s: float) -> None:
        """:meth:`push` for asyncio callers."""
        self._clear_until = 0.0
        try:
            await self.astore.push(self.name, self.limit, retry_after_s * 1000)
        except STORE_ERRORS as exc:
            self._warn("could not push", exc)
            return
        logger.info("rate limit %s: 429, all workers hold off %.2fs", self.name, retry_after_s)

    def _warn(self, what: str, exc: BaseException) -> None:
        now = self.clock()
        if now - self._warned_at >= 10.0:
            self._warned_at = now
            logger.warning("rate limit %s: %s (%s)", self.name, what, exc)


__all__ = ["Limiter", "RateLimitWait"]
