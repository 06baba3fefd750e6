"""Redis clients for the guarded layer: one synchronous client per process, and an asyncio
client for each long-lived event loop that adopts one; both on ``REDIS_URL``, made on first
use and again after a fork.

Breakers and limits are used from task code (sync), from proj's runtime loop and from any
event loop a user runs. An asyncio client is bound to the loop that made it and must be
closed on it; a task that runs ``asyncio.run`` makes a new loop each time, so a client per
loop would leak connections. Loops that live long (proj's runtime, a server's loop) call
:func:`adopt_loop` and get their own asyncio client; on any other loop the guarded layer runs
its few Redis steps on the synchronous client in a thread (:class:`InThread`).
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis

from proj.settings import get_settings

_lock = threading.Lock()
_pid = 0
_sync: redis.Redis | None = None
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)

#: Socket timeouts: a Redis that stops answering must not hang a guarded call for long.
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0


def _check_pid() -> None:
    global _pid, _sync, _async
    if _pid != os.getpid():
        _pid, _sync, _async = os.getpid(), None, weakref.WeakKeyDictionary()


def _after_fork_in_child() -> None:
    # The parent's connections must not be shared, and a lock held at fork stays held.
    global _lock
    _lock = threading.Lock()
    _check_pid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def sync_client() -> redis.Redis:
    """This process's synchronous client (thread-safe: redis-py pools connections)."""
    global _sync
    with _lock:
        _check_pid()
        if _sync is None:
            _sync = redis.Redis.from_url(
                get_settings().broker.redis_url,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                health_check_interval=25,
            )
        return _sync


def adopt_loop() -> None:
    """The running loop lives long: give it an asyncio client of its own (closed with
    :func:`aclose_loop_client` before the loop ends)."""
    async_client()


def loop_client() -> aioredis.Redis | None:
    """The running loop's asyncio client, if it adopted one."""
    with _lock:
        _check_pid()
        return _async.get(asyncio.get_running_loop())


def async_client() -> aioredis.Redis:
    """The asyncio client of the running event loop (made now if it has none)."""
    loop = asyncio.get_running_loop()
    with _lock:
        _check_pid()
        client = _async.get(loop)
        if client is None:
            # A blocking pool: hundreds of concurrent calls share a few connections and wait
            # for one, instead of failing with "Too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                get_settings().broker.redis_url,
                max_connections=64,
                timeout=30,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                health_check_interval=25,
            )
            client = _async[loop] = aioredis.Redis(connection_pool=pool)
        return client


async def aclose_loop_client() -> None:
    """Close the running loop's client (a loop that is about to end)."""
    loop = asyncio.get_running_loop()
    with _lock:
        client = _async.pop(loop, None) if _pid == os.getpid() else None
    if client is not None:
        await client.aclose(close_connection_pool=True)


def reset() -> None:
    """Forget every client (tests, and after the settings change)."""
    global _sync
    with _lock:
        if _sync is not None and _pid == os.getpid():
            _sync.close()
        _sync = None
        _async.clear()


class InThread:
    """A synchronous store behind the asyncio API: each call runs in a worker thread, so
    the event loop is not blocked and no connection is bound to it."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        fn = getattr(self._target, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(fn, *args, **kwargs)

        return call
