"""The rate limit as a worker process uses it: ``acquire()`` before a call (sleeping until
its reserved slot, or raising :class:`RateLimitWait` when that is too far off) and ``push()``
after a 429."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from proj.resilience.ratelimit import RateLimit, RateLimitWait
from proj.resilience.ratelimit_store import LimiterStore

logger = logging.getLogger("proj.ratelimit")


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

    async def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited. Raises :class:`RateLimitWait`."""
        if self.limit is None and self.clock() < self._clear_until:
            return 0.0
        try:
            r = await self.store.acquire(self.name, self.limit, self.max_wait_s * 1000)
        except Exception as exc:  # shared state unreachable: do not stop the work
            logger.warning("rate limit %s: store unreachable (%s); not limiting", self.name, exc)
            return 0.0
        wait = r.wait_ms / 1000
        if not r.granted:
            raise RateLimitWait(self.name, wait)
        if self.limit is None and wait == 0:
            self._clear_until = self.clock() + self.cache_s
        if wait > 0:
            await self.sleep(wait)
        return wait

    async def push(self, retry_after_s: float) -> None:
        """Everyone holds off this dependency for ``retry_after_s`` (a 429's Retry-After)."""
        self._clear_until = 0.0
        try:
            await self.store.push(self.name, self.limit, retry_after_s * 1000)
        except Exception as exc:
            logger.warning("rate limit %s: could not push (%s)", self.name, exc)
            return
        logger.info("rate limit %s: 429, all workers hold off %.2fs", self.name, retry_after_s)
