"""What the batches of a pipeline share: the result cache and in-flight markers, keyed by the
items' idempotency keys (``proj:cache:<pipeline>:<key>``, ``proj:inflight:<pipeline>:<key>``).
:class:`proj.batch.store.BatchStore` has these steps too (it is their only user)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from proj import keys
from proj.resilience.lua import text as _s


class SharedKeys:
    """The result cache and in-flight markers, on an asyncio client ``r``."""

    r: aioredis.Redis

    # Each such key has its own slot on Redis Cluster: every step below is a pipeline of
    # single-key commands (one round trip, not atomic), as no step needs two keys to change
    # together: each command decides for its key alone.
    async def _get(self, names: Sequence[str]) -> list[Any]:
        if not names:
            return []
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
        return list(await pipe.execute())

    async def cached(self, pipeline: str, item_keys: Sequence[str]) -> list[str | None]:
        """The cached result JSON of each idempotency key (None: not cached)."""
        hits = await self._get([keys.cache(pipeline, k) for k in item_keys])
        return [None if h is None else _s(h) for h in hits]

    async def mark_in_flight(
        self, pipeline: str, markers: Sequence[tuple[str, str]], ttl_ms: int
    ) -> list[bool]:
        """Set each (idempotency key, marker JSON) unless another is there (SET NX, for
        ``ttl_ms``); True where this call set it. Each marker is won or lost on its own."""
        if not markers:
            return []
        pipe = self.r.pipeline(transaction=False)
        for key, marker in markers:
            pipe.set(keys.inflight(pipeline, key), marker, nx=True, px=ttl_ms)
        return [bool(ok) for ok in await pipe.execute()]

    async def in_flight(self, pipeline: str, item_keys: Sequence[str]) -> list[tuple[str, Any]]:
        """(marker key, its value now or None) of each idempotency key: what a takeover of a
        dead runner's marker (:meth:`proj.batch.lease.RunnerLeases.take_marker`) compares."""
        marker_keys = [keys.inflight(pipeline, k) for k in item_keys]
        return list(zip(marker_keys, await self._get(marker_keys), strict=True))

    async def clear_in_flight(self, pipeline: str, *item_keys: str) -> None:
        """Drop the in-flight markers of these idempotency keys (the item is put back)."""
        await self.settle(pipeline, {}, 0, item_keys)

    async def settle(
        self, pipeline: str, results: Mapping[str, str], cache_ttl_s: int, done: Sequence[str]
    ) -> None:
        """In one round trip: cache ``results`` (idempotency key -> result JSON) for
        ``cache_ttl_s``, and drop the in-flight markers of the ``done`` keys."""
        if not results and not done:
            return
        pipe = self.r.pipeline(transaction=False)
        for key, payload in results.items():
            pipe.set(keys.cache(pipeline, key), payload, ex=cache_ttl_s)
        for key in done:
            pipe.delete(keys.inflight(pipeline, key))
        await pipe.execute()
