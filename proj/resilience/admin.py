"""Operator views and commands over the shared resilience state (``proj breakers``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from proj.resilience.breaker import Snapshot
from proj.resilience.breaker_store import RedisBreakerStore
from proj.settings import Settings

#: Breakers every deployment has, listed even before their first call.
KNOWN_BREAKERS = ("ai", "company", "person")


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[RedisBreakerStore]:
    client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    try:
        yield RedisBreakerStore(client)
    finally:
        await client.aclose()


async def _snapshots(settings: Settings) -> list[Snapshot]:
    async with _store(settings) as store:
        names = sorted(set(KNOWN_BREAKERS) | set(await store.names()))
        return [await store.snapshot(n, settings.breaker_policy(n)) for n in names]


async def _force(settings: Settings, name: str, state: str) -> tuple[str, str] | None:
    async with _store(settings) as store:
        moved = await store.force(name, state)
    if moved is not None:
        from proj.provider.runtime import send_celery_event

        send_celery_event(
            {"breaker": name, "old_state": moved[0], "new_state": moved[1], "forced": True}
        )
    return moved


def snapshots(settings: Settings) -> list[Snapshot]:
    """State, failure rate, calls in window and half-open time of every breaker."""
    return asyncio.run(_snapshots(settings))


def force(settings: Settings, name: str, state: str) -> tuple[str, str] | None:
    """Hold a breaker open (``forced-open``) or close it; returns the transition, if any."""
    return asyncio.run(_force(settings, name, state))
