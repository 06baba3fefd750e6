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
from proj.provider.client import ProviderClient, make_http_client
from proj.resilience import outcomes
from proj.resilience.breaker_client import Breaker, CeleryEventListener, LogListener
from proj.resilience.breaker_store import RedisBreakerStore
from proj.resilience.limiter import Limiter
from proj.resilience.outcomes import OutcomeRecorder
from proj.resilience.ratelimit_store import RedisLimiterStore
from proj.settings import Settings, get_settings

T = TypeVar("T")
logger = logging.getLogger("proj.runtime")


def send_celery_event(fields: dict[str, object]) -> None:
    """Publish a ``proj-breaker-state`` event on the app's event exchange (Flower sees it)."""
    from proj.app import app

    with app.events.default_dispatcher() as dispatcher:
        dispatcher.send("proj-breaker-state", **fields)


class Providers:
    """The named external dependencies of this process, sharing one HTTP client, each behind
    its own circuit breaker (state shared through Redis)."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self._clients: dict[str, ProviderClient] = {}
        self._breakers: dict[str, Breaker] = {}
        self._limiters: dict[str, Limiter] = {}
        self._redis: aioredis.Redis | None = None
        self._outcomes: OutcomeRecorder | None = None

    @property
    def outcomes(self) -> OutcomeRecorder | None:
        """Reports call outcomes to this worker node's adaptive controller, when it runs."""
        if self._outcomes is None and outcomes.ENABLED and outcomes.NODE:
            self._outcomes = OutcomeRecorder(self.redis, outcomes.NODE)
        return self._outcomes

    def limiter(self, name: str) -> Limiter:
        lim = self._limiters.get(name)
        if lim is None:
            lim = self._limiters[name] = Limiter(
                name,
                self.settings.enforced_rate_limit(name),
                RedisLimiterStore(self.redis),
                max_wait_s=self.settings.rate_limit_max_wait_s,
            )
        return lim

    @property
    def redis(self) -> aioredis.Redis:
        """This process's asyncio Redis client (on the runtime's loop)."""
        if self._redis is None:
            # A blocking pool: hundreds of concurrent calls share a few connections and wait
            # for one, instead of failing with "Too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                self.settings.redis_url,
                max_connections=64,
                timeout=30,
                socket_timeout=10,
                socket_connect_timeout=5,
                health_check_interval=25,
            )
            self._redis = aioredis.Redis(connection_pool=pool)
        return self._redis

    def breaker(self, name: str) -> Breaker | None:
        if not self.settings.breaker_enabled:
            return None
        b = self._breakers.get(name)
        if b is None:
            b = self._breakers[name] = Breaker(
                name,
                self.settings.breaker_policy(name),
                RedisBreakerStore(self.redis),
                cache_s=self.settings.breaker_cache_s,
                listeners=[LogListener(), CeleryEventListener(send_celery_event)],
            )
        return b

    def _make(self, name: str) -> ProviderClient:
        client = self._make_client(name)
        client.limiter = self.limiter(name)
        client.outcomes = self.outcomes
        client.rate_limited_pause_s = self.settings.rate_limited_pause_s
        return client

    def _make_client(self, name: str) -> ProviderClient:
        s = self.settings
        if name == "ai":
            base, key, prices = s.provider_base_url, s.provider_api_key, s.model_prices
            if base is None:
                raise ConfigError(
                    "PROVIDER_BASE_URL is not set: point it at an OpenAI-compatible "
                    "API, or run `proj up`, which starts the simulator"
                )
            return ProviderClient(
                name,
                base,
                self.http,
                api_key=key,
                timeout_s=s.http_timeout_s,
                prices=prices,
                breaker=self.breaker(name),
            )
        if name in ("company", "person"):
            if s.lookup_url is None:
                raise ConfigError("PROJ_LOOKUP_BASE_URL (or PROVIDER_BASE_URL) is not set")
            return ProviderClient(
                name,
                s.lookup_url,
                self.http,
                api_key=s.lookup_key,
                timeout_s=s.http_timeout_s,
                breaker=self.breaker(name),
            )
        # Anything else: absolute URLs (sources, webhooks), no credentials.
        return ProviderClient(
            name, "", self.http, timeout_s=s.http_timeout_s, breaker=self.breaker(name)
        )

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
            settings,
            make_http_client(
                max_connections=settings.http_max_connections,
                connect_timeout_s=settings.http_connect_timeout_s,
            ),
        )

    def run(self, fn: Callable[[Providers], Awaitable[T]], timeout_s: float | None = None) -> T:
        """Run ``fn(providers)`` on the loop and wait for it; cancel it if we stop waiting."""

        async def call() -> T:
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
            transport = providers.http._transport  # the AiohttpTransport make_http_client set
            if isinstance(transport, AiohttpTransport) and not isinstance(
                transport.client, aiohttp.ClientSession
            ):
                # What the transport does on its first request: create the session and keep it.
                transport.client = transport.get_client()
            for name in ("ai", "company", "person"):
                with contextlib.suppress(ConfigError):  # not configured in this deployment
                    providers.get(name)
            await providers.redis.ping()

        try:
            self.run(warm, timeout_s)
        except Exception as exc:  # a cold start is slower, never wrong
            logger.warning("runtime warm-up failed (%s); continuing cold", exc)

    def close(self) -> None:
        async def shutdown() -> None:
            for b in self.providers._breakers.values():
                await b.aclose()
            if self.providers._outcomes is not None:
                await self.providers._outcomes.flush()
            await self.providers.http.aclose()
            if self.providers._redis is not None:
                await self.providers._redis.aclose(close_connection_pool=True)

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
    """Close this process's runtime (tests, and after settings change)."""
    global _runtime
    with _lock:
        if _runtime is not None and _runtime.pid == os.getpid():
            _runtime.close()
        _runtime = None
