"""The runner: a Celery task that works through a batch with many items in flight.

A runner claims items in slices (with leases), runs up to its window of them concurrently on
the process's event loop (each call through the dependency's breaker, rate limit and outcome
reporting), records results in batches, and keeps the window full until the batch is done or
its time budget is spent; then it hands over to a fresh runner task. Its window adapts like
the worker pool does (AIMD on the success rate), within 1..PROJ_BATCH_CONCURRENCY.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import redis

from proj import keys
from proj.app import app
from proj.batch.dlq import DeadLetters
from proj.batch.pipelines import ItemPipeline, get_pipeline
from proj.batch.store import BatchStore
from proj.provider import runtime
from proj.provider.errors import PermanentError, ProviderError, RateLimited
from proj.resilience.concurrency import ConcurrencyPolicy, ControllerState, decide
from proj.resilience.deferral import Deferral
from proj.settings import Settings, get_settings

logger = logging.getLogger("proj.batch")

RESTARTS_HEADER = "proj_runner_restarts"
MAX_RESTARTS = 20


def backoff_s(attempt: int, settings: Settings, rnd: float) -> float:
    """Exponential backoff with jitter: base x 2^(attempt-1), capped, times 0.5..1."""
    raw = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** max(0, attempt - 1))
    return raw * (0.5 + rnd / 2)


@dataclass
class _Window:
    """The runner's in-flight limit, adapted from call outcomes."""

    policy: ConcurrencyPolicy
    state: ControllerState
    ok: int = 0
    failed: int = 0
    changed_at: float = field(default_factory=time.monotonic)

    @classmethod
    def for_limit(cls, limit: int) -> _Window:
        policy = ConcurrencyPolicy(
            start=limit,
            minimum=1,
            maximum=limit,
            cooldown_s=0.5,
            min_samples=max(20, limit // 5),
            slow_start=False,
            increase=max(1, limit // 20),
        )
        return cls(policy, ControllerState(limit, slow_start=False))

    @property
    def limit(self) -> int:
        return self.state.limit

    def observe(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        d = decide(
            self.policy,
            self.state,
            ok=self.ok,
            failed=self.failed,
            waiting=True,
            since_change_s=time.monotonic() - self.changed_at,
        )
        if d.changed:
            logger.info("batch window %d -> %d: %s", self.state.limit, d.limit, d.reason)
            self.state, self.ok, self.failed = d.state, 0, 0
            self.changed_at = time.monotonic()


class Runner:
    def __init__(
        self, p: runtime.Providers, batch_id: str, pipeline: ItemPipeline, settings: Settings
    ) -> None:
        self.p = p
        self.batch_id = batch_id
        self.pipeline = pipeline
        self.settings = settings
        self.store = BatchStore(p.redis, settings.batch_ttl_s)
        self.window = _Window.for_limit(settings.batch_concurrency)
        self.buffer: list[tuple[int, str, str]] = []
        self.cache_writes: dict[str, str] = {}
        self.inflight_keys: list[str] = []
        self.processed = 0

    # --- the loop -----------------------------------------------------------------------------
    async def run(self, budget_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + budget_s
        pending: set[asyncio.Task[None]] = set()
        last_flush = time.monotonic()
        finished = False
        while True:
            if time.monotonic() < deadline and len(pending) < self.window.limit:
                n = min(self.settings.batch_slice, self.window.limit - len(pending))
                for task in await self._start(n):
                    pending.add(task)
            if pending:
                done, pending = await asyncio.wait(
                    pending, timeout=0.05, return_when=asyncio.FIRST_COMPLETED
                )
                for t in done:
                    t.result()
            if self.buffer and (
                len(self.buffer) >= 200 or time.monotonic() - last_flush > 0.05 or not pending
            ):
                await self.flush()
                last_flush = time.monotonic()
            if pending:
                continue
            # Nothing in flight here: more to claim, waiting (delayed) items, or the end?
            await self.flush()
            if await self.store.second_pass(self.batch_id) > 0:
                continue
            if await self.store.finish(self.batch_id):
                await self._finalize()
                finished = True
                break
            progress = await self.store.progress(self.batch_id)
            if progress is None or progress.status == "finished":
                break
            if time.monotonic() >= deadline:
                break
            if progress.deferred:
                await asyncio.sleep(0.2)  # waiting items become ready; claim them then
                continue
            if progress.in_flight:
                # Other runners hold the rest; wait in case one dies and its leases expire.
                await asyncio.sleep(0.5)
                continue
            await asyncio.sleep(0.05)
        progress = await self.store.progress(self.batch_id)
        more = (
            progress is not None and progress.status != "finished" and time.monotonic() >= deadline
        )
        return {
            "batch_id": self.batch_id,
            "processed": self.processed,
            "finished": finished,
            "more": more,
        }

    async def _start(self, n: int) -> list[asyncio.Task[None]]:
        claimed = await self.store.claim(self.batch_id, n, self.settings.batch_lease_s)
        if not claimed:
            return []
        loaded = await self.store.load(self.batch_id, claimed)
        cached = await self.p.redis.mget([keys.cache(self.pipeline.name, k) for _, _, k in loaded])
        tasks = []
        lease_ms = int(self.settings.batch_lease_s * 1000)
        pipe = self.p.redis.pipeline(transaction=False)
        fresh = []
        for (idx, item, key), hit in zip(loaded, cached, strict=True):
            if hit is not None:  # computed before, within the cache TTL: no provider call
                self.buffer.append((idx, "cached", hit.decode() if isinstance(hit, bytes) else hit))
                continue
            pipe.set(
                keys.inflight(self.pipeline.name, key),
                f"{self.batch_id}:{idx}",
                nx=True,
                px=lease_ms,
            )
            fresh.append((idx, item, key))
        owned = await pipe.execute() if fresh else []
        for (idx, item, key), mine in zip(fresh, owned, strict=True):
            if mine:
                tasks.append(asyncio.create_task(self._one(idx, item, key)))
            else:  # the same input is being computed elsewhere: take its result when ready
                await self.store.delay(self.batch_id, idx, 1.0, attempt=False)
        return tasks

    async def _one(self, idx: int, item: dict[str, Any], key: str) -> None:
        inflight = keys.inflight(self.pipeline.name, key)
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
            await self.p.redis.delete(inflight)
            return
        except Exception as exc:
            await self._failed(idx, exc, inflight)
            return
        self.window.observe(True)
        payload = json.dumps(result, default=str)
        self.buffer.append((idx, "done", payload))
        if self.settings.cache_ttl_s:
            self.cache_writes[keys.cache(self.pipeline.name, key)] = payload
        self.inflight_keys.append(inflight)
        self.processed += 1

    async def _failed(self, idx: int, exc: Exception, inflight: str) -> None:
        retryable = (
            isinstance(exc, ProviderError) and exc.retryable and not isinstance(exc, PermanentError)
        )
        if retryable:
            self.window.observe(False)
        attempts = int(await self.p.redis.hincrby(self.store.k(self.batch_id, "attempts"), idx, 1))
        await self.p.redis.delete(inflight)
        if retryable and attempts <= self.settings.task_max_retries:
            await self.store.delay(
                self.batch_id,
                idx,
                backoff_s(attempts, self.settings, random.random()),
                attempt=False,
            )
            return
        error = {
            "kind": getattr(exc, "kind", "internal"),
            "message": f"{type(exc).__name__}: {exc}",
            "attempts": attempts,
            "traceback": "".join(traceback.format_exception(exc))[-4000:],
        }
        self.buffer.append((idx, "failed", json.dumps(error)))

    async def flush(self) -> None:
        if self.buffer:
            batch, self.buffer = self.buffer, []
            await self.store.complete(self.batch_id, batch)
        if self.cache_writes or self.inflight_keys:
            pipe = self.p.redis.pipeline(transaction=False)
            for k, v in self.cache_writes.items():
                pipe.set(k, v, ex=self.settings.cache_ttl_s)
            if self.inflight_keys:
                pipe.delete(*self.inflight_keys)
            self.cache_writes, self.inflight_keys = {}, []
            await pipe.execute()

    async def _finalize(self) -> None:
        """Once per batch: dead-letter what still failed, then the pipeline's last step."""
        errors = await self.store.errors(self.batch_id)
        if errors:
            entries = []
            for idx, err in errors.items():
                entries.append(
                    {
                        "batch_id": self.batch_id,
                        "pipeline": self.pipeline.name,
                        "index": idx,
                        "item": await self.store.item(self.batch_id, idx),
                        "error": {"kind": err.get("kind"), "message": err.get("message")},
                        "attempts": err.get("attempts"),
                        "traceback": err.get("traceback"),
                    }
                )
            client = redis.Redis.from_url(self.settings.redis_url)
            try:
                await asyncio.to_thread(DeadLetters(client).add, entries)
            finally:
                client.close()
            logger.warning("batch %s: %d items dead-lettered", self.batch_id, len(entries))
        started = float(await self.store.meta(self.batch_id, "started") or time.time())
        results = await self.store.results(self.batch_id)
        try:
            await self.pipeline.finish(self.batch_id, results, started)
        except Exception:
            logger.exception("batch %s: the pipeline's last step failed", self.batch_id)
        logger.info(
            "batch %s finished: %d done, %d failed", self.batch_id, len(results), len(errors)
        )


@app.task(name="proj.batch.run", bind=True)
def run_batch(self: Any, batch_id: str) -> dict[str, Any]:
    """Work through batch ``batch_id`` for up to PROJ_BATCH_RUNNER_BUDGET_S, then hand over."""
    settings = get_settings()
    pipeline_name = runtime.run(
        lambda p: BatchStore(p.redis, settings.batch_ttl_s).meta(batch_id, "pipeline")
    )
    if pipeline_name is None:
        logger.warning("batch %s does not exist (expired?)", batch_id)
        return {"batch_id": batch_id, "missing": True}
    pipeline = get_pipeline(pipeline_name)
    budget = settings.batch_runner_budget_s
    try:
        out = runtime.run(
            lambda p: Runner(p, batch_id, pipeline, settings).run(budget),
            timeout_s=budget + settings.http_timeout_s + 30,
        )
    except Exception as exc:  # Redis restarting, a bug: the batch must not stall
        restarts = int(self.request.get(RESTARTS_HEADER) or 0) + 1
        logger.exception("batch %s: runner failed (%d)", batch_id, restarts)
        if restarts <= MAX_RESTARTS:
            run_batch.apply_async(
                (batch_id,),
                countdown=min(60, 2**restarts),
                queue=(self.request.delivery_info or {}).get("routing_key"),
                headers={RESTARTS_HEADER: restarts},
            )
        return {"batch_id": batch_id, "error": f"{type(exc).__name__}: {exc}"}
    if out["more"]:
        run_batch.apply_async(
            (batch_id,), queue=(self.request.delivery_info or {}).get("routing_key")
        )
    return out
