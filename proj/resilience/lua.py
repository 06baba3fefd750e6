"""A Lua script run by its SHA on any Redis client, sync or asyncio, loaded on first use.

redis-py's ``register_script`` binds a script to one client; proj's stores run the same
script from many clients (one per process, one per event loop), so the SHA is computed once
here and ``NOSCRIPT`` (a restarted or flushed Redis) loads it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

Arg = str | int | float | bytes

#: Lua that sets ``now`` to the Redis server's clock in ms: every host that runs a script reads
#: one clock.
NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""


class LuaScript:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def run(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)

    async def arun(self, client: aioredis.Redis, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


def text(v: object) -> str:
    """A reply as text, whether the client decodes responses or not."""
    return v.decode() if isinstance(v, bytes) else str(v)


class SyncClient:
    """A store's synchronous client: one client, or a factory called each time it is used
    (so a forked process uses its own)."""

    def __init__(self, client: redis.Redis | Callable[[], redis.Redis]) -> None:
        self._client = client

    @property
    def client(self) -> redis.Redis:
        c = self._client
        # A client (redis.Redis, or a RedisCluster) has commands; a factory does not.
        return c if hasattr(c, "execute_command") else c()  # type: ignore[return-value]
