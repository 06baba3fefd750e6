"""The runner: a Celery task that works through a batch with many items in flight.

A runner claims items in slices (with leases), runs up to its window of them concurrently on
the process's event loop (each call through the dependency's breaker, rate limit and outcome
reporting), records results in batches, and keeps the window full until the batch is done or
its time budget is spent; then it hands over to a fresh runner task. Its window adapts like
the worker pool does (AIMD on the success rate), within 1..PROJ_BATCH_CONCURRENCY.

A runner holds a lease while it runs (:mod:`proj.batch.lease`); a batch whose runners die is
started again by a worker's watchdog. Re-dispatching (hand-over, restart after a failure)
retries through a Redis outage.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from proj.batch.lease import Marker, RunnerLeases, heartbeat_s, new_runner_id
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

#: Publishing the next runner retries this long through a broker outage (kombu's ensure: 0.5 s,
#: then 1 s, ... up to 3 s between tries; about a minute). Past it, the watchdog takes over.
REDISPATCH_RETRY = {
    "max_retries": 25,
    "interval_start": 0.5,
    "interval_step": 0.5,
    "interval_max": 3.0,
}


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
        self,
        p: runtime.Providers,
        batch_id: str,
        pipeline: ItemPipeline,
        settings: Settings,
        runner_id: str | None = None,
    ) -> None:
        self.p = p
        self.batch_id = batch_id
        self.pipeline = pipeline
        self.settings = settings
        self.runner_id = runner_id or new_runner_id(None)
        self.store = BatchStore(p.redis, settings.batch_ttl_s)
        self.leases = RunnerLeases(settings.batch_runner_lease_s, settings.batch_ttl_s)
        self.pending: set[asyncio.Task[None]] = set()
        self.running: set[int] = set()  # indexes this runner is computing now
        self.window = _Window.for_limit(settings.batch_concurrency)
        self.buffer: list[tuple[int, str, str]] = []
        self.cache_writes: dict[str, str] = {}
        self.inflight_keys: list[str] = []
        self.processed = 0

    # --- the loop -----------------------------------------------------------------------------
    async def run(
        self, budget_s: float, *, replaces: str | None = None, forced: bool = False
    ) -> dict[str, Any]:
        """Work under a lease; ``replaces``: the runner this one takes over from; ``forced``:
        join even if the batch has its runners (``proj batch resume``)."""
        r = self.p.redis
        joined = await self.leases.join(
            r, self.batch_id, self.runner_id, replaces=replaces, forced=forced
        )
        if joined != 1:  # finished, gone, or started twice (a runner the watchdog sent too)
            return {
                "batch_id": self.batch_id,
                "processed": 0,
                "finished": joined < 0,
                "more": False,
                "surplus": joined == 0,
            }
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            return await self._run(budget_s)
        finally:
            heartbeat.cancel()
            orphaned = bool(self.pending)
            for t in self.pending:
                t.cancel()
            with contextlib.suppress(Exception):  # Redis gone: the lease lapses on its own
                await self.flush()
            with contextlib.suppress(Exception):
                await self.leases.leave(r, self.batch_id, self.runner_id, orphaned=orphaned)

    async def _heartbeat(self) -> None:
        every = heartbeat_s(self.settings.batch_runner_lease_s)
        while True:
            await asyncio.sleep(every)
            try:
                lapsed, dead = await self.leases.heartbeat(
                    self.p.redis, self.batch_id, self.runner_id
                )
            except Exception as exc:  # Redis away: the loop fails too, or it comes back
                logger.warning("batch %s: lease not renewed (%s)", self.batch_id, exc)
                continue
            if lapsed:
                logger.warning(
                    "batch %s: runner %s renewed a lapsed lease", self.batch_id, self.runner_id
                )
            if dead:
                logger.warning(
                    "batch %s: %d runner(s) died; their items are claimable again",
                    self.batch_id,
                    dead,
                )

    async def _run(self, budget_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + budget_s
        last_flush = time.monotonic()
        finished = False
        while True:
            if time.monotonic() < deadline and len(self.pending) < self.window.limit:
                await self._start(
                    min(self.settings.batch_slice, self.window.limit - len(self.pending))
                )
            if self.pending:
                done, self.pending = await asyncio.wait(
                    self.pending, timeout=0.05, return_when=asyncio.FIRST_COMPLETED
                )
                for t in done:
                    t.result()
            if self.buffer and (
                len(self.buffer) >= 200 or time.monotonic() - last_flush > 0.05 or not self.pending
            ):
                await self.flush()
                last_flush = time.monotonic()
            if self.pending:
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
                # Other runners hold the rest; if one dies, the heartbeat releases its items.
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

    async def _start(self, n: int) -> None:
        """Claim up to ``n`` items and start those this runner computes (into ``pending``)."""
        claimed = await self.store.claim(self.batch_id, n, self.settings.batch_lease_s)
        if not claimed:
            return
        loaded = await self.store.load(self.batch_id, claimed)
        cached = await self.p.redis.mget([keys.cache(self.pipeline.name, k) for _, _, k in loaded])
        lease_ms = int(self.settings.batch_lease_s * 1000)
        pipe = self.p.redis.pipeline(transaction=False)
        fresh = []
        for (idx, item, key), hit in zip(loaded, cached, strict=True):
            if hit is not None:  # computed before, within the cache TTL: no provider call
                self.buffer.append((idx, "cached", hit.decode() if isinstance(hit, bytes) else hit))
                continue
            if idx in self.running:  # claimed again after a lease release: still ours
                continue
            pipe.set(
                keys.inflight(self.pipeline.name, key),
                Marker(self.batch_id, idx, self.runner_id).dumps(),
                nx=True,
                px=lease_ms,
            )
            fresh.append((idx, item, key))
        owned = await pipe.execute() if fresh else []
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

    async def _take_markers(
        self, items: list[tuple[int, dict[str, Any], str]], lease_ms: int
    ) -> list[tuple[int, dict[str, Any], str]]:
        """Of ``items`` whose in-flight marker another runner holds, those whose marker this
        runner took over because that runner is dead (its lease gone)."""
        marker_keys = [keys.inflight(self.pipeline.name, k) for _, _, k in items]
        seen = await self.p.redis.mget(marker_keys)
        took = await asyncio.gather(
            *(
                self.leases.take_marker(
                    self.p.redis, mk, raw, Marker(self.batch_id, idx, self.runner_id), lease_ms
                )
                for (idx, _, _), mk, raw in zip(items, marker_keys, seen, strict=True)
            )
        )
        return [it for it, ok in zip(items, took, strict=True) if ok]

    async def _one(self, idx: int, item: dict[str, Any], key: str) -> None:
        try:
            await self._compute(idx, item, key)
        finally:
            self.running.discard(idx)

    async def _compute(self, idx: int, item: dict[str, Any], key: str) -> None:
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
def run_batch(
    self: Any, batch_id: str, replaces: str | None = None, forced: bool = False
) -> dict[str, Any]:
    """Work through batch ``batch_id`` for up to PROJ_BATCH_RUNNER_BUDGET_S, then hand over.

    ``replaces``: the runner this one follows (hand-over, restart); ``forced``: run even if
    the batch has its runners (``proj batch resume``)."""
    settings = get_settings()
    runner_id = new_runner_id(self.request.hostname)
    budget = settings.batch_runner_budget_s
    try:
        pipeline_name = runtime.run(
            lambda p: BatchStore(p.redis, settings.batch_ttl_s).meta(batch_id, "pipeline")
        )
        if pipeline_name is None:
            logger.warning("batch %s does not exist (expired?)", batch_id)
            return {"batch_id": batch_id, "missing": True}
        pipeline = get_pipeline(pipeline_name)
        out = runtime.run(
            lambda p: Runner(p, batch_id, pipeline, settings, runner_id).run(
                budget, replaces=replaces, forced=forced
            ),
            timeout_s=budget + settings.http_timeout_s + 30,
        )
    except Exception as exc:  # Redis restarting, a bug: the batch must not stall
        restarts = int(self.request.get(RESTARTS_HEADER) or 0) + 1
        logger.exception("batch %s: runner failed (%d)", batch_id, restarts)
        if restarts <= MAX_RESTARTS:
            _next_runner(
                self, batch_id, runner_id, countdown=min(60, 2**restarts), restarts=restarts
            )
        return {"batch_id": batch_id, "error": f"{type(exc).__name__}: {exc}"}
    if out.get("surplus"):
        logger.info("batch %s already has its runners; runner %s not needed", batch_id, runner_id)
    if out["more"]:
        _next_runner(self, batch_id, runner_id)
    return out


def _next_runner(
    task: Any, batch_id: str, runner_id: str, *, countdown: float = 0, restarts: int = 0
) -> None:
    """Send the runner that takes over from ``runner_id``, retrying through a broker outage;
    if that fails too, the watchdog starts the batch again once this runner's lease lapses."""
    try:
        run_batch.apply_async(
            (batch_id,),
            {"replaces": runner_id},
            countdown=countdown or None,
            queue=(task.request.delivery_info or {}).get("routing_key"),
            headers={RESTARTS_HEADER: restarts} if restarts else None,
            retry=True,
            retry_policy=REDISPATCH_RETRY,
        )
    except Exception as exc:
        logger.error(
            "batch %s: next runner not sent (%s); a worker's watchdog starts it once runner "
            "%s's lease lapses",
            batch_id,
            exc,
            runner_id,
        )
