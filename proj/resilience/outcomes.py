"""Call outcomes of the pool processes of one worker node, counted in Redis for the node's
adaptive controller (which runs in the worker's main process).

A pool process learns its node name from Celery's ``worker_process_init`` signal; the
controller switches reporting on before the pool forks. Counts are batched every 0.2 s into
``proj:cc:{node}:win`` in 200 ms buckets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import redis.asyncio as aioredis

from proj import keys

logger = logging.getLogger("proj.concurrency")

BUCKET_MS = 200
FLUSH_S = 0.2
TTL_S = 120

#: Set in the worker's main process by the controller, inherited by forked pool processes.
ENABLED = False
#: This pool process's worker node name (from ``worker_process_init``).
NODE: str | None = None


def enable() -> None:
    global ENABLED
    ENABLED = True


def set_node(name: str | None) -> None:
    global NODE
    NODE = name


class OutcomeRecorder:
    """Buffers ok/failed counts and flushes them to the node's window."""

    def __init__(self, client: aioredis.Redis, node: str) -> None:
        self.client = client
        self.key = keys.concurrency_window(node)
        self.ok = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None

    def record(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_S)
        await self.flush()

    async def flush(self) -> None:
        ok, failed, self.ok, self.failed = self.ok, self.failed, 0, 0
        if not (ok or failed):
            return
        bucket = int(time.time() * 1000) // BUCKET_MS
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                if ok:
                    pipe.hincrby(self.key, f"o:{bucket}", ok)
                if failed:
                    pipe.hincrby(self.key, f"f:{bucket}", failed)
                pipe.expire(self.key, TTL_S)
                await pipe.execute()
        except Exception as exc:
            logger.warning("could not report call outcomes: %s", exc)


def window_counts(raw: Mapping[bytes | str, bytes | str], since_ms: float) -> tuple[int, int]:
    """(ok, failed) in the buckets that start after ``since_ms``. Pure."""
    ok = failed = 0
    first = int(since_ms) // BUCKET_MS + 1  # whole buckets after ``since_ms``
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else field
        kind, _, bucket = name.partition(":")
        if int(bucket) >= first:
            if kind == "o":
                ok += int(value)
            else:
                failed += int(value)
    return ok, failed
