"""Per-process async runtime: one event loop thread and the dependencies' clients on it.

Celery runs a task in a pool process's main thread; the task hands its coroutine to this
process's loop and waits. Connections are pooled across tasks. A fork gets a fresh runtime
(the loop thread does not survive ``fork``), so prefork children and ``pool_grow`` are safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import httpx
import redis.asyncio as aioredis
from httpx_aiohttp import AiohttpTransport

from proj.errors import ConfigError
from proj.guard import callstats, connections, flusher, registry
from proj.guard import http as http_guard
from proj.guard.http import AsyncGuardedTransport, guard
from proj.provider.client import ProviderClient
from proj.provider.transport import make_transport
from proj.settings import Settings, get_settings

T = TypeVar("T")
logger = logging.getLogger("proj.runtime")


class Providers:
    """This process's clients of the declared dependencies, on one shared connection pool,
    each through its dependency's guard (breaker, global rate limit, outcome reporting)."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport) -> None:
        self.settings = settings
        self.transport = transport
        self._clients: dict[str, ProviderClient] = {}

    @property
    def redis(self) -> aioredis.Redis:
        """This process's asyncio Redis client (on the runtime's loop)."""
        return connections.async_client()

    def _make(self, name: str) -> ProviderClient:
        g = guard(name)  # ConfigError for a dependency that is not declared or not set
        http = httpx.AsyncClient(
            base_url=g.dep.base_url or "",
            transport=AsyncGuardedTransport(g, self.transport, owns_inner=False),
            timeout=httpx.Timeout(None, connect=self.settings.providers.http_connect_timeout_s),
            follow_redirects=False,
        )
        return ProviderClient(
            name, http, timeout_s=g.dep.timeout_s, prices=self.settings.queues.model_prices
        )

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        await self.transport.aclose()

    def get(self, name: str) -> ProviderClient:
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self._make(name)
        return client

    @property
    def ai(self) -> ProviderClient:
        return self.get("ai")

    @property
    def company(self) -> ProviderClient:
        return self.get("company")

    @property
    def person(self) -> ProviderClient:
        return self.get("person")


class Runtime:
    """An event loop on a daemon thread, and this process's :class:`Providers`."""

    def __init__(self, settings: Settings) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="proj-aio", daemon=True)
        self._thread.start()
        self.providers = Providers(
            settings, make_transport(max_connections=settings.providers.http_max_connections)
        )

        async def adopt() -> None:  # this loop lives as long as the process: its own client
            connections.adopt_loop()

        asyncio.run_coroutine_threadsafe(adopt(), self.loop).result(5)

    def run(self, fn: Callable[[Providers], Awaitable[T]], timeout_s: float | None = None) -> T:
        """Run ``fn(providers)`` on the loop and wait for it; cancel it if we stop waiting."""

        pipeline = callstats.PIPELINE.get()  # the caller's, carried onto the loop

        async def call() -> T:
            callstats.PIPELINE.set(pipeline)
            return await fn(self.providers)

        future = asyncio.run_coroutine_threadsafe(call(), self.loop)
        try:
            return future.result(timeout_s)
        except BaseException:  # includes SoftTimeLimitExceeded raised by Celery's signal
            future.cancel()
            raise

    def warm_up(self, timeout_s: float = 2.0) -> None:
        """Pay the first-use costs now, before the first task: the HTTP session, a Redis
        connection, and the clients of the configured dependencies. Otherwise the first call
        of each new pool process pays them *after* its rate-limit slot, and sixteen processes
        starting at once crowd that many calls into too short a time."""

        async def warm(providers: Providers) -> None:
            transport = providers.transport
            if isinstance(transport, AiohttpTransport) and not isinstance(
                transport.client, aiohttp.ClientSession
            ):
                # What the transport does on its first request: create the session and keep it.
                transport.client = transport.get_client()
            for name in providers.settings.dependency_breakers():
                with contextlib.suppress(ConfigError):  # not configured in this deployment
                    providers.get(name)
            await providers.redis.ping()

        try:
            self.run(warm, timeout_s)
        except Exception as exc:  # a cold start is slower, never wrong
            logger.warning("runtime warm-up failed (%s); continuing cold", exc)

    def close(self) -> None:
        async def shutdown() -> None:
            await self.providers.aclose()
            await connections.aclose_loop_client()

        flusher.flush_all()
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """This process's runtime, created on first use (and again after a fork)."""
    global _runtime
    rt = _runtime
    if rt is not None and rt.pid == os.getpid():
        return rt
    with _lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = Runtime(get_settings())
        return _runtime


def run(fn: Callable[[Providers], Awaitable[T]], timeout_s: float | None = None) -> T:
    """Run an async step against this process's providers from synchronous (task) code."""
    return get_runtime().run(fn, timeout_s)


def reset_runtime() -> None:
    """Close this process's runtime and forget its guards, breakers, limits and Redis
    clients (tests, and after the settings change)."""
    global _runtime
    with _lock:
        if _runtime is not None and _runtime.pid == os.getpid():
            _runtime.close()
        _runtime = None
    http_guard.reset()
    registry.reset()
    connections.reset()
