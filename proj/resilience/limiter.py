"""The rate limit as a worker process uses it: ``acquire()`` before a call (sleeping until
its reserved slot, or raising :class:`RateLimitWait` when that is too far off) and ``push()``
after a 429.

A process that wakes up well after its slot (a loaded machine does not run it on time) does not
use the stale slot: sending then would crowd the next caller's slot, and the provider would see
two calls where the limit allows one. It reserves a new slot instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from proj.resilience.ratelimit import RateLimit, RateLimitWait
from proj.resilience.ratelimit_store import LimiterStore

logger = logging.getLogger("proj.ratelimit")

#: A caller that keeps waking late sends on its last reservation rather than starve.
MAX_RESERVATIONS = 3


class Limiter:
    def __init__(
        self,
        name: str,
        limit: RateLimit | None,
        store: LimiterStore,
        *,
        max_wait_s: float = 5.0,
        cache_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.limit = limit
        self.store = store
        self.max_wait_s = max_wait_s
        self.cache_s = cache_s
        self.clock = clock
        self.sleep = sleep
        self._clear_until = 0.0  # unlimited dependency: no push seen until then
        # Later than this after its slot, a caller takes a new one (a quarter of the interval,
        # at least 5 ms: finer than that, the clocks and the network blur it anyway).
        self.late_s = max(0.005, limit.interval_ms / 4000) if limit else float("inf")
        self.stale_slots = 0  # slots given up because this process woke too late

    async def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited. Raises :class:`RateLimitWait`."""
        if self.limit is None and self.clock() < self._clear_until:
            return 0.0
        waited = 0.0
        for _ in range(MAX_RESERVATIONS - 1):
            due = await self._reserve()
            if due is None:
                return waited
            waited += await self._sleep_until(due)
            late = self.clock() - due
            if late <= self.late_s:
                return waited
            self.stale_slots += 1
            logger.debug("rate limit %s: woke %.0f ms late; new slot", self.name, late * 1000)
        due = await self._reserve()  # the last reservation goes however late it wakes
        return waited if due is None else waited + await self._sleep_until(due)

    async def _sleep_until(self, due: float) -> float:
        wait = due - self.clock()
        if wait <= 0:
            return 0.0
        await self.sleep(wait)
        return wait

    async def _reserve(self) -> float | None:
        """Reserve a slot: when it is due (on ``clock``), or None for no limit or no store."""
        try:
            r = await self.store.acquire(self.name, self.limit, self.max_wait_s * 1000)
        except Exception as exc:  # shared state unreachable: do not stop the work
            logger.warning("rate limit %s: store unreachable (%s); not limiting", self.name, exc)
            return None
        wait = r.wait_ms / 1000
        if not r.granted:
            raise RateLimitWait(self.name, wait)
        if self.limit is None and wait == 0:
            self._clear_until = self.clock() + self.cache_s
            return None
        return self.clock() + wait

    async def push(self, retry_after_s: float) -> None:
        """Everyone holds off this dependency for ``retry_after_s`` (a 429's Retry-After)."""
        self._clear_until = 0.0
        try:
            await self.store.push(self.name, self.limit, retry_after_s * 1000)
        except Exception as exc:
            logger.warning("rate limit %s: could not push (%s)", self.name, exc)
            return
        logger.info("rate limit %s: 429, all workers hold off %.2fs", self.name, retry_after_s)
