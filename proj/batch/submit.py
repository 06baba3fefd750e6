"""Submitting a batch, watching it, and resuming it.

handle = proj.batch.submit("leads", items)          # validated, deduplicated, dispatched
handle.wait(on_progress=print)                       # or watch proj batches / the CLI bar
handle.results(), handle.errors()

Each call is one event loop and one Redis connection; a watch (``wait``) keeps both for the
whole watch and reconnects after a lost connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from proj import keys
from proj.batch.lease import RunnerLeases
from proj.batch.pipelines import content_key, get_pipeline
from proj.batch.progress import with_store
from proj.batch.store import BatchStore, Progress
from proj.errors import ProjError
from proj.pipelines.validation import Rejected
from proj.resilience.backoff import Backoff
from proj.settings import Settings, get_settings

T = TypeVar("T")

logger = logging.getLogger("proj.batch")

#: A finished batch's last step (summary, dead letters) runs right after it is marked
#: finished; a watcher waits for it this long at most, plus the time the watchdog takes to
#: send another runner when the first died in it (:func:`finalize_wait_s`).
FINALIZE_WAIT_S = 30.0


def finalize_wait_s(settings: Settings) -> float:
    """How long after a batch finished a watcher waits for its last step: a runner's lease to
    lapse twice (the one that died in it, and one sent again) and a watchdog interval."""
    b = settings.batch
    return FINALIZE_WAIT_S + 2 * b.runner_lease_s + b.watchdog_interval_s


def reconnect_delay_s(failures: int, interval_s: float, cap_s: float = 2.0) -> float:
    """How long a watcher waits before its next try after ``failures`` failed polls in a row:
    the poll interval, doubling, at most ``cap_s``."""
    return Backoff(interval_s, cap_s).delay(failures)


@dataclass
class BatchHandle:
    """A submitted batch. Everything it knows lives in Redis, so any process can watch it."""

    batch_id: str
    rejected: list[Rejected] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    existing: bool = False  # the id was already submitted: nothing new was enqueued

    @property
    def _settings(self) -> Settings:
        return get_settings()

    async def _progress(self, store: BatchStore) -> Progress:
        p = await store.progress(self.batch_id)
        if p is None:
            raise ProjError(f"batch {self.batch_id!r} not found (expired, or never submitted)")
        return p

    def progress(self) -> Progress:
        return with_store(self._progress, self._settings)

    def report(self) -> tuple[Progress, dict[int, Any]]:
        """The batch's progress and its failures (index -> error), on one connection."""

        async def both(store: BatchStore) -> tuple[Progress, dict[int, Any]]:
            return await self._progress(store), await store.errors(self.batch_id)

        return with_store(both, self._settings)

    def wait(
        self,
        timeout_s: float | None = None,
        *,
        interval_s: float = 0.25,
        on_progress: Callable[[Progress], None] | None = None,
        on_connection: Callable[[Exception | None], None] | None = None,
    ) -> Progress:
        """Poll until the batch is finished and its last step has run; calls ``on_progress`` at
        each poll.

        One event loop and one Redis connection for the whole watch. A lost connection is
        tried again (see :func:`reconnect_delay_s`) until ``timeout_s``; ``on_connection``
        hears the error when it is lost and None when it is back."""

        last_step_wait = finalize_wait_s(self._settings)

        async def watch(store: BatchStore) -> Progress:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            failures = 0
            while True:
                try:
                    p = await self._progress(store)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    failures += 1
                    if failures == 1 and on_connection is not None:
                        on_connection(exc)
                    if deadline is not None and time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(reconnect_delay_s(failures, interval_s))
                    continue
                if failures:
                    failures = 0
                    if on_connection is not None:
                        on_connection(None)
                if on_progress is not None:
                    on_progress(p)
                if p.status == "finished" and (
                    p.finalized is not None or time.time() - (p.finished or 0) > last_step_wait
                ):
                    return p  # and its summary is stored (or its last step is not coming)
                if deadline is not None and time.monotonic() > deadline:
                    msg = f"batch {self.batch_id} not finished after {timeout_s}s: {p}"
                    raise TimeoutError(msg)
                await asyncio.sleep(interval_s)

        return with_store(watch, self._settings)

    def results(self) -> dict[int, Any]:
        return with_store(lambda s: s.results(self.batch_id), self._settings)

    def errors(self) -> dict[int, Any]:
        return with_store(lambda s: s.errors(self.batch_id), self._settings)


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
