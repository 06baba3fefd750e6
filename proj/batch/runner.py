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
import logging
import time
from collections.abc import Callable
from typing import Any

from proj.app import app
from proj.batch.finalize import finalize
from proj.batch.items import ItemWork
from proj.batch.lease import LAST_STEP, RunnerLeases, heartbeat_s, new_runner_id
from proj.batch.pipelines import ItemPipeline, get_pipeline
from proj.batch.progress_events import PROGRESS_EVERY_S, progress_sender
from proj.batch.store import BatchStore, Progress
from proj.guard import callstats
from proj.provider import runtime
from proj.resilience.backoff import Backoff
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

#: A runner that failed (Redis restarting, a bug) is sent again after 2 s, 4 s, ... up to 60 s.
RESTART_BACKOFF = Backoff(base_s=2.0, max_s=60.0)


class Runner:
    """Works through one batch under a lease: claims more while its window has room, and
    decides when the batch is at its end. Every Redis step goes through ``store`` (the lease
    steps through ``leases``); its items' work is :class:`proj.batch.items.ItemWork`'s."""

    def __init__(
        self,
        p: runtime.Providers,
        batch_id: str,
        pipeline: ItemPipeline,
        settings: Settings,
        runner_id: str | None = None,
        report: Callable[[Progress], None] | None = None,
    ) -> None:
        self.batch_id = batch_id
        self.report = report
        self.pipeline = pipeline
        self.settings = settings
        self.runner_id = runner_id or new_runner_id(None)
        self.store = BatchStore(p.redis, settings.batch.ttl_s)
        self.leases = RunnerLeases(settings.batch.runner_lease_s, settings.batch.ttl_s)
        self.items = ItemWork(
            p, self.store, self.leases, pipeline, batch_id, self.runner_id, settings
        )

    # --- the loop -----------------------------------------------------------------------------
    async def run(
        self, budget_s: float, *, replaces: str | None = None, forced: bool = False
    ) -> dict[str, Any]:
        """Work under a lease; ``replaces``: the runner this one takes over from; ``forced``:
        join even if the batch has its runners (``proj batch resume``)."""
        r = self.store.r
        joined = await self.leases.join(
            r, self.batch_id, self.runner_id, replaces=replaces, forced=forced
        )
        if joined == LAST_STEP:  # finished, but the runner that finished it died in its last step
            heartbeat = asyncio.create_task(self._heartbeat())  # its lease holds while it runs
            try:
                logger.warning("batch %s: running its last step again", self.batch_id)
                await finalize(self.store, self.pipeline, self.batch_id)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(Exception):
                    await self.leases.leave(r, self.batch_id, self.runner_id, orphaned=False)
            return {"batch_id": self.batch_id, "processed": 0, "finished": True, "more": False}
        if joined != 1:  # finished, gone, or started twice (a runner the watchdog sent too)
            return {
                "batch_id": self.batch_id,
                "processed": 0,
                "finished": joined < 0,
                "more": False,
                "surplus": joined == 0,
            }
        callstats.PIPELINE.set(self.pipeline.name)  # this run's task, and the items it starts
        heartbeat = asyncio.create_task(self._heartbeat())
        reporter = asyncio.create_task(self._report_progress()) if self.report else None
        try:
            return await self._run(budget_s)
        finally:
            heartbeat.cancel()
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(BaseException):
                    await reporter
                await self._report_once()  # the last word: where this runner left the batch
            orphaned = bool(self.items.pending)
            for t in self.items.pending:
                t.cancel()
            with contextlib.suppress(Exception):  # Redis gone: the lease lapses on its own
                await self.items.flush()
            with contextlib.suppress(Exception):
                await self.leases.leave(r, self.batch_id, self.runner_id, orphaned=orphaned)

    async def _heartbeat(self) -> None:
        every = heartbeat_s(self.settings.batch.runner_lease_s)
        while True:
            await asyncio.sleep(every)
            try:
                lapsed, dead = await self.leases.heartbeat(
                    self.store.r, self.batch_id, self.runner_id
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

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            await self._report_once()

    async def _report_once(self) -> None:
        """Hand the batch's progress to ``report`` (off the loop: publishing blocks). A lost
        report is only a stale monitor, never a reason to stop the batch."""
        assert self.report is not None
        try:
            progress = await self.store.progress(self.batch_id)
            if progress is not None:
                await asyncio.to_thread(self.report, progress)
        except Exception as exc:
            logger.debug("batch %s: progress not reported (%s)", self.batch_id, exc)

    async def _run(self, budget_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + budget_s
        last_flush = time.monotonic()
        finished = False
        work = self.items
        while True:
            room = work.window.limit - len(work.pending)
            if time.monotonic() < deadline and room > 0:
                await work.start(min(self.settings.batch.slice, room))
            if work.pending:
                done, work.pending = await asyncio.wait(
                    work.pending, timeout=0.05, return_when=asyncio.FIRST_COMPLETED
                )
                for t in done:
                    t.result()
            if work.buffer and (
                len(work.buffer) >= 200 or time.monotonic() - last_flush > 0.05 or not work.pending
            ):
                await work.flush()
                last_flush = time.monotonic()
            if work.pending:
                continue
            # Nothing in flight here: more to claim, waiting (delayed) items, or the end?
            await work.flush()
            if await self.store.second_pass(self.batch_id) > 0:
                continue
            if await self.store.finish(self.batch_id):
                await finalize(self.store, self.pipeline, self.batch_id)
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
            "processed": work.processed,
            "finished": finished,
            "more": more,
        }


@app.task(name="proj.batch.run", bind=True, track_started=True)
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
            lambda p: BatchStore(p.redis, settings.batch.ttl_s).meta(batch_id, "pipeline")
        )
        if pipeline_name is None:
            logger.warning("batch %s does not exist (expired?)", batch_id)
            return {"batch_id": batch_id, "missing": True}
        pipeline = get_pipeline(pipeline_name)
        report = progress_sender(self, runner_id)
        out = runtime.run(
            lambda p: Runner(p, batch_id, pipeline, settings, runner_id, report).run(
                budget, replaces=replaces, forced=forced
            ),
            timeout_s=budget + settings.providers.http_timeout_s + 30,
        )
    except Exception as exc:  # Redis restarting, a bug: the batch must not stall
        restarts = int(self.request.get(RESTARTS_HEADER) or 0) + 1
        logger.exception("batch %s: runner failed (%d)", batch_id, restarts)
        if restarts <= MAX_RESTARTS:
            countdown = RESTART_BACKOFF.delay(restarts)
            _next_runner(self, batch_id, runner_id, countdown=countdown, restarts=restarts)
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
