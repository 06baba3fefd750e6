"""A runner's items: what happens to each item it claims, from the claim to its outcome.

Of a claimed slice, the result cache answers what it holds (no provider call); the rest get an
in-flight marker per input (``proj:inflight:<pipeline>:<key>``, SET NX), so two batches never
compute the same input at once: an item whose marker another live runner holds waits for that
result, one whose marker names a dead runner is taken over. An item runs on the event loop and
ends done, deferred (an open breaker, a rate-limit wait, a 429: no attempt counted), put back
to retry with backoff (a transient failure, up to PROJ_TASK_MAX_RETRIES), or failed. Outcomes
are buffered and recorded in batches (:meth:`ItemWork.flush`).
"""

from __future__ import annotations

import asyncio
import json
import random
import traceback
from typing import Any

from proj.batch.lease import Marker, RunnerLeases
from proj.batch.pipelines import ItemPipeline
from proj.batch.store import BatchStore
from proj.batch.window import Window
from proj.provider.errors import PermanentError, ProviderError, RateLimited
from proj.provider.runtime import Providers
from proj.resilience.backoff import Backoff
from proj.resilience.deferral import Deferral
from proj.settings import Settings

Item = tuple[int, dict[str, Any], str]  # index, item, idempotency key


def retry_backoff(settings: Settings) -> Backoff:
    """An item's retry after a transient failure: PROJ_RETRY_BACKOFF_S doubling up to
    PROJ_RETRY_BACKOFF_MAX_S, waiting 0.5..1 of that (jitter)."""
    return Backoff(settings.batch.retry_backoff_s, settings.retries.retry_backoff_max_s, jitter=0.5)


class ItemWork:
    """The items one runner has in flight (``pending``), within its adaptive ``window``, and
    the outcomes it has not recorded yet."""

    def __init__(
        self,
        p: Providers,
        store: BatchStore,
        leases: RunnerLeases,
        pipeline: ItemPipeline,
        batch_id: str,
        runner_id: str,
        settings: Settings,
    ) -> None:
        self.p = p
        self.store = store
        self.leases = leases
        self.pipeline = pipeline
        self.batch_id = batch_id
        self.runner_id = runner_id
        self.settings = settings
        self.window = Window.for_limit(settings.batch.concurrency)
        self.retry = retry_backoff(settings)
        self.pending: set[asyncio.Task[None]] = set()
        self.running: set[int] = set()  # indexes this runner is computing now
        self.buffer: list[tuple[int, str, str]] = []  # (index, done|failed|cached, JSON)
        self.cache_writes: dict[str, str] = {}  # idempotency key -> result JSON
        self.done_keys: list[str] = []  # idempotency keys whose in-flight markers go
        self.processed = 0
        self.fresh: bool | None = None  # read from the batch on the first claim

    async def start(self, n: int) -> None:
        """Claim up to ``n`` items and start those this runner computes (into ``pending``)."""
        claimed = await self.store.claim(self.batch_id, n, self.settings.batch.lease_s)
        if not claimed:
            return
        loaded = await self.store.load(self.batch_id, claimed)
        if self.fresh is None:  # submitted with fresh=True: the cache is not read
            self.fresh = await self.store.meta(self.batch_id, "fresh") == "1"
        cached = (
            [None] * len(loaded)
            if self.fresh
            else await self.store.cached(self.pipeline.name, [k for _, _, k in loaded])
        )
        lease_ms = int(self.settings.batch.lease_s * 1000)
        fresh = []
        for (idx, item, key), hit in zip(loaded, cached, strict=True):
            if hit is not None:  # computed before, within the cache TTL: no provider call
                self.buffer.append((idx, "cached", hit))
                continue
            if idx in self.running:  # claimed again after a lease release: still ours
                continue
            fresh.append((idx, item, key))
        owned = await self.store.mark_in_flight(
            self.pipeline.name,
            [(key, Marker(self.batch_id, idx, self.runner_id).dumps()) for idx, _, key in fresh],
            lease_ms,
        )
        taken = list(zip(fresh, owned, strict=True))
        others = [f for f, mine in taken if not mine]
        if others:
            owned_by_dead = await self._take_markers(others, lease_ms)
            taken = [(f, mine or f in owned_by_dead) for f, mine in taken]
        for (idx, item, key), mine in taken:
            if mine:
                self.running.add(idx)
                self.pending.add(asyncio.create_task(self._one(idx, item, key)))
        for (idx, _, _), mine in taken:
            if not mine:  # the same input is being computed elsewhere: its result when ready
                await self.store.delay(self.batch_id, idx, 1.0, attempt=False)

    async def _take_markers(self, items: list[Item], lease_ms: int) -> list[Item]:
        """Of ``items`` whose in-flight marker another runner holds, those whose marker this
        runner took over because that runner is dead (its lease gone)."""
        seen = await self.store.in_flight(self.pipeline.name, [k for _, _, k in items])
        took = await asyncio.gather(
            *(
                self.leases.take_marker(
                    self.store.r, mk, raw, Marker(self.batch_id, idx, self.runner_id), lease_ms
                )
                for (idx, _, _), (mk, raw) in zip(items, seen, strict=True)
            )
        )
        return [it for it, ok in zip(items, took, strict=True) if ok]

    async def _one(self, idx: int, item: dict[str, Any], key: str) -> None:
        try:
            await self._compute(idx, item, key)
        finally:
            self.running.discard(idx)

    async def _compute(self, idx: int, item: dict[str, Any], key: str) -> None:
        try:
            result = await self.pipeline.process(self.p, item, batch_id=self.batch_id)
        except (Deferral, RateLimited) as exc:
            wait = exc.retry_after_s if isinstance(exc, RateLimited) else exc.wait_s
            if isinstance(exc, RateLimited):
                self.window.observe(False)
            await self.store.delay(
                self.batch_id,
                idx,
                max(0.05, wait or 1.0) * (1 + random.random() / 5),
                attempt=False,
            )
            await self.store.clear_in_flight(self.pipeline.name, key)
            return
        except Exception as exc:
            await self._failed(idx, exc, key)
            return
        self.window.observe(True)
        payload = json.dumps(result, default=str)
        self.buffer.append((idx, "done", payload))
        if self.settings.batch.cache_ttl_s:
            self.cache_writes[key] = payload
        self.done_keys.append(key)
        self.processed += 1

    async def _failed(self, idx: int, exc: Exception, key: str) -> None:
        retryable = (
            isinstance(exc, ProviderError) and exc.retryable and not isinstance(exc, PermanentError)
        )
        if retryable:
            self.window.observe(False)
        attempts = await self.store.count_attempt(self.batch_id, idx)
        await self.store.clear_in_flight(self.pipeline.name, key)
        if retryable and attempts <= self.settings.retries.task_max_retries:
            wait_s = self.retry.delay(attempts, random.random())
            await self.store.delay(self.batch_id, idx, wait_s, attempt=False)
            return
        error = {
            "kind": getattr(exc, "kind", "internal"),
            "message": f"{type(exc).__name__}: {exc}",
            "attempts": attempts,
            "traceback": "".join(traceback.format_exception(exc))[-4000:],
        }
        self.buffer.append((idx, "failed", json.dumps(error)))

    async def flush(self) -> None:
        """Record buffered outcomes, then cache results and drop the done items' markers."""
        if self.buffer:
            batch, self.buffer = self.buffer, []
            await self.store.complete(self.batch_id, batch)
        if self.cache_writes or self.done_keys:
            cache, done = self.cache_writes, self.done_keys
            self.cache_writes, self.done_keys = {}, []
            await self.store.settle(
                self.pipeline.name, cache, self.settings.batch.cache_ttl_s, done
            )
