"""Reading batches from any process: one event loop and one Redis connection per call.
Light to import (no pipeline, no provider client): ``proj status``, ``proj metrics`` and
``proj batches`` read progress through it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis

from proj.batch.store import BatchStore, Progress
from proj.settings import Settings, get_settings

T = TypeVar("T")

#: How a watcher's connection shows in Redis's CLIENT LIST.
CLIENT_NAME = "proj-batch-reader"


@contextlib.asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[BatchStore]:
    """A batch store on a Redis client of its own (one connection), closed at the end."""
    client = aioredis.Redis.from_url(
        settings.broker.redis_url, socket_connect_timeout=5, client_name=CLIENT_NAME
    )
    try:
        yield BatchStore(client, settings.batch.ttl_s)
    finally:
        await client.aclose()


def with_store(fn: Callable[[BatchStore], Awaitable[T]], settings: Settings) -> T:
    async def main() -> T:
        async with connected(settings) as store:
            return await fn(store)

    return asyncio.run(main())


def list_batches(limit: int = 50) -> list[Progress]:
    settings = get_settings()

    async def fetch(s: BatchStore) -> list[Progress]:
        out = []
        for b in await s.batch_ids(limit):
            p = await s.progress(b)
            if p is not None:
                out.append(p)
        return out

    return with_store(fetch, settings)
