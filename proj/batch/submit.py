"""Submitting a batch and resuming it; what a submitter gets back is a
:class:`~proj.batch.handle.BatchHandle` (watching it: :mod:`proj.batch.handle`).

handle = proj.batch.submit("leads", items)          # validated, deduplicated, dispatched
handle.wait(on_progress=print)                       # or watch proj batches / the CLI bar
handle.results(), handle.errors()
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from proj import keys
from proj.batch.handle import (
    FINALIZE_WAIT_S,
    BatchHandle,
    finalize_wait_s,
    reconnect_delay_s,
)
from proj.batch.lease import RunnerLeases
from proj.batch.pipelines import content_key, get_pipeline
from proj.batch.progress import with_store
from proj.batch.store import BatchStore, Progress
from proj.errors import ProjError
from proj.settings import Settings, get_settings

__all__ = [
    "FINALIZE_WAIT_S",
    "BatchHandle",
    "NotStarted",
    "Prepared",
    "asubmit",
    "dispatch",
    "finalize_wait_s",
    "prepare",
    "reconnect_delay_s",
    "resume",
    "rewatch",
    "runners_for",
    "submit",
]

logger = logging.getLogger("proj.batch")


def runners_for(total: int, settings: Settings) -> int:
    """Small batches get one runner; large ones PROJ_BATCH_RUNNERS, never more than slices."""
    if total <= settings.batch.small_max:
        return 1
    return max(1, min(settings.batch.runners, -(-total // settings.batch.slice)))


def dispatch(
    batch_id: str,
    n: int,
    *,
    urgent: bool,
    settings: Settings,
    forced: bool = False,
    retry_policy: dict[str, Any] | None = None,
) -> None:
    """Send ``n`` runners of the batch to its queue (``forced``: they run even if the batch
    has its runners)."""
    from proj.batch.runner import run_batch

    queue = settings.queues.urgent_queue if urgent else settings.queues.bulk_queue
    for _ in range(n):
        run_batch.apply_async(
            (batch_id,),
            {"forced": True} if forced else None,
            queue=queue,
            retry_policy=retry_policy,
        )


def _leases(settings: Settings) -> RunnerLeases:
    return RunnerLeases(settings.batch.runner_lease_s, settings.batch.ttl_s)


def submit(
    pipeline: str,
    items: list[Any],
    *,
    urgent: bool = False,
    batch_id: str | None = None,
    fresh: bool = False,
) -> BatchHandle:
    """Validate ``items`` for ``pipeline``, store them and start the runners.

    Invalid items are rejected (see ``handle.rejected``: index, field, value) and the rest go
    on. Items with the same idempotency key (their ``key`` field, else a hash of their
    content) are run once. Submitting an existing ``batch_id`` again enqueues nothing new.
    ``fresh``: compute every item again, even one whose result the cache holds (the new
    result then replaces it).
    """
    settings = get_settings()
    prepared = prepare(pipeline, items, batch_id=batch_id)
    return with_store(
        lambda s: asubmit(s, prepared, urgent=urgent, fresh=fresh, settings=settings), settings
    )


@dataclass
class Prepared:
    """A batch validated and deduplicated, not yet stored."""

    pipeline: str
    handle: BatchHandle
    items: dict[str, dict[str, Any]]  # idempotency key -> item, first seen first
    positions: dict[str, list[int]]  # idempotency key -> the item's places in the input

    def renumbered(self) -> list[list[int]] | None:
        """Each stored item's places in the input, when they differ from its index (invalid
        items or repeats were left out); None when item ``i`` is input item ``i``."""
        places = list(self.positions.values())
        return None if all(p == [i] for i, p in enumerate(places)) else places


def prepare(pipeline: str, items: list[Any], *, batch_id: str | None = None) -> Prepared:
    """Validate and deduplicate ``items`` (ValueError naming the known pipelines for an
    unknown one); nothing is stored."""
    pipe = get_pipeline(pipeline)
    accepted, rejected = pipe.validate(items)
    left_out = {r.index for r in rejected}
    places = (i for i in range(len(items)) if i not in left_out)
    unique: dict[str, dict[str, Any]] = {}
    positions: dict[str, list[int]] = {}
    for item, place in zip(accepted, places, strict=True):
        key = content_key(item)
        unique.setdefault(key, item)
        positions.setdefault(key, []).append(place)
    batch_id = batch_id or uuid.uuid4().hex[:16]
    handle = BatchHandle(batch_id, rejected, len(unique), len(accepted) - len(unique))
    return Prepared(pipeline, handle, unique, positions)


async def asubmit(
    store: BatchStore,
    prepared: Prepared,
    *,
    urgent: bool = False,
    fresh: bool = False,
    meta: dict[str, str] | None = None,
    settings: Settings,
) -> BatchHandle:
    """Store a prepared batch and start its runners (asyncio callers: ``proj api``).
    ``meta``: more fields of the batch's hash. An existing id enqueues nothing new."""
    handle = prepared.handle
    if not prepared.items:
        return handle
    item_list = list(prepared.items.values())
    runners = runners_for(len(item_list), settings)
    queue = settings.queues.urgent_queue if urgent else settings.queues.bulk_queue
    declared = settings.queue_config.queues.get(queue)
    if declared is not None and declared.max_depth:  # QueueFull before anything is stored
        await asyncio.to_thread(_check_room, queue)
    created = await store.create(
        handle.batch_id,
        prepared.pipeline,
        item_list,
        list(prepared.items),
        duplicates=handle.duplicates,
        urgent=urgent,
        fresh=fresh,
        now=time.time(),
        meta=meta,
        positions=prepared.renumbered(),
    )
    if not created:
        handle.existing = True
        await rewatch(store, handle.batch_id, settings)
        return handle
    # Stored: from here the batch must start. The watchdog starts it within a runner lease
    # once it expects runners, so either step alone is enough; only when both fail is the
    # caller told (it may submit again: the same id finds the batch and expects it again).
    problems = []
    try:
        await _leases(settings).expect(store.r, handle.batch_id, runners)
    except (redis.RedisError, OSError) as exc:
        problems.append(f"Redis: {exc}")
    sent = 0
    try:
        for _ in range(runners):  # one by one: a batch with one runner sent has started
            await asyncio.to_thread(dispatch, handle.batch_id, 1, urgent=urgent, settings=settings)
            sent += 1
    except Exception as exc:  # QueueFull, the broker gone: the watchdog sends runners later
        problems.append(f"{type(exc).__name__}: {exc}")
    if len(problems) == 2 and not sent:
        raise NotStarted(handle.batch_id, "; ".join(problems))
    if problems:
        logger.warning("batch %s stored; runners not sent now (%s)", handle.batch_id, problems[0])
    return handle


class NotStarted(ProjError):
    """A batch was stored but neither its runners nor the watchdog could be told: submitting it
    again with the same id starts it."""

    def __init__(self, batch_id: str, why: str) -> None:
        super().__init__(f"batch {batch_id} was stored but not started ({why})")
        self.batch_id = batch_id


def _check_room(queue: str) -> None:
    from proj.app import app

    app.amqp.router.check_room(queue)


async def rewatch(store: BatchStore, batch_id: str, settings: Settings) -> None:
    """A batch submitted again: a submitter that died (or lost Redis) right after storing it
    left it without runners and out of the watchdog's index; put it in, so the watchdog starts
    it within a runner lease. A batch already in the index is left as it is (a client that
    retries often must not keep pushing its adoption back)."""
    if await store.r.zscore(keys.BATCH_LEASES, batch_id) is not None:
        return
    if await store.meta(batch_id, "status") == "running":
        await _leases(settings).expect(store.r, batch_id)


def resume(batch_id: str) -> BatchHandle:
    """Finish a batch whose submitter or workers died: every item lease is made claimable and
    fresh runners start at once, beside any live ones. Items already done are not run again;
    an item whose in-flight marker names a dead runner (its lease gone) runs at once, one
    whose runner is alive waits for that runner's result. A finished batch whose last step
    never ran (its runner died in it) gets one runner for that step."""
    settings = get_settings()

    async def prepare(s: BatchStore) -> tuple[Progress | None, str | None]:
        p = await s.progress(batch_id)
        if p is not None and (p.status != "finished" or p.finalized is None):
            if p.status != "finished":
                await s.expire_leases(batch_id)
            await _leases(settings).expect(s.r, batch_id)
        return p, await s.meta(batch_id, "urgent")

    progress, urgent = with_store(prepare, settings)
    if progress is None:
        raise ProjError(f"batch {batch_id!r} not found (expired, or never submitted)")
    handle = BatchHandle(batch_id, accepted=progress.total)
    if progress.status != "finished":
        remaining = progress.total - progress.done - progress.failed
        dispatch(
            batch_id,
            runners_for(remaining, settings),
            urgent=urgent == "1",
            settings=settings,
            forced=True,
        )
    elif progress.finalized is None:
        dispatch(batch_id, 1, urgent=urgent == "1", settings=settings)
    return handle
