"""A batch's last step, run once by the runner that marked it finished: dead-letter what
still failed after the second pass, then the pipeline's own last step (a summary, a
notification), kept on the batch; then its completion callback, if it was given one
(:mod:`proj.tasks.callbacks`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from proj.batch.pipelines import ItemPipeline
from proj.batch.store import BatchStore

logger = logging.getLogger("proj.batch")


async def finalize(store: BatchStore, pipeline: ItemPipeline, batch_id: str) -> None:
    """Once per batch: dead letters, then ``pipeline.finish``; a failure of the latter is
    logged (the batch is finished either way)."""
    errors = await store.errors(batch_id)
    if errors:
        n = await store.dead_letter(batch_id, pipeline.name, errors)
        logger.warning("batch %s: %d items dead-lettered", batch_id, n)
    started = float(await store.meta(batch_id, "started") or time.time())
    results = await store.results(batch_id)
    try:
        summary = await pipeline.finish(store, batch_id, results, started)
        if summary is not None:
            await store.set_meta(batch_id, summary=json.dumps(summary, default=str))
    except Exception:
        logger.exception("batch %s: the pipeline's last step failed", batch_id)
    if await store.meta(batch_id, "callback_url"):
        await _send_callback(store, batch_id)
    await store.mark_finalized(batch_id)
    logger.info("batch %s finished: %d done, %d failed", batch_id, len(results), len(errors))


async def _send_callback(store: BatchStore, batch_id: str) -> None:
    """Enqueue the batch's completion callback (before the batch is marked finalized, so a
    watcher that sees it finalized knows the callback is on its way); a failure to enqueue is
    kept on the batch for ``GET /v1/batches/{id}`` and logged, and the batch finishes anyway."""
    from proj.tasks.callbacks import deliver

    try:
        await asyncio.to_thread(deliver.delay, batch_id)
    except Exception as exc:  # the broker gone, the queue full
        logger.error("batch %s: callback not enqueued: %s", batch_id, exc)
        record = {"status": "failed", "detail": f"not enqueued: {exc}", "at": time.time()}
        await store.set_meta(batch_id, callback=json.dumps(record))
