"""Where rate limits live: Redis (``proj:rl:{name}``, one string each) or memory; each with
a synchronous and an asyncio API."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

import redis.asyncio as aioredis

from proj import keys
from proj.resilience import ratelimit as rules
from proj.resilience.lua import Arg, LuaScript, SyncClient, text
from proj.resilience.ratelimit import RateLimit, Reservation

_NOW = """
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
"""

# Reserve a slot (rules.reserve).
# KEYS[1] TAT; ARGV[1] now_ms (0: server clock), [2] interval ms, [3] tolerance ms,
#     [4] quantity, [5] max wait ms
# Returns {granted 0|1, wait ms as a string}
ACQUIRE = (
    _NOW
    + """
local interval, tau = tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * tonumber(ARGV[4])
local wait = new_tat - tau - now
if wait < 0 then wait = 0 end
if wait > tonumber(ARGV[5]) then return {0, tostring(wait)} end
if new_tat > now then
  redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now + tau) + 1000)
end
return {1, tostring(wait)}
"""
)

# Push the limit forward after a 429 (rules.push).
# KEYS[1] TAT; ARGV[1] now_ms, [2] interval ms, [3] tolerance ms, [4] wait ms from now
# Returns the new TAT as a string
PUSH = (
    _NOW
    + """
local interval, tau = tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local pushed = now + tonumber(ARGV[4]) - interval + tau
if pushed > tat then
  tat = pushed
  redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now + tau) + 1000)
end
return tostring(tat)
"""
)


ACQUIRE_SCRIPT = LuaScript(ACQUIRE)
PUSH_SCRIPT = LuaScript(PUSH)


def _args(limit: RateLimit | None) -> tuple[float, float]:
    return (limit.interval_ms, limit.tolerance_ms) if limit else (0.0, 0.0)


def _acquire_args(limit: RateLimit | None, max_wait_ms: float, now_ms: float | None) -> list[Arg]:
    interval, tau = _args(limit)
    return [now_ms or 0, repr(interval), repr(tau), 1, repr(max_wait_ms)]


def _push_args(limit: RateLimit | None, wait_ms: float, now_ms: float | None) -> list[Arg]:
    interval, tau = _args(limit)
    return [now_ms or 0, repr(interval), repr(tau), repr(wait_ms)]


def _reservation(reply: list[Any]) -> Reservation:
    granted, wait = reply
    return Reservation(bool(int(granted)), float(text(wait)), 0.0)


class LimiterStore(Protocol):
    """Where limits live (synchronous API)."""

    def acquire(
        self, name: str, limit: RateLimit | None, max_wait_ms: float, now_ms: float | None = None
    ) -> Reservation: ...

    def push(
        self, name: str, limit: RateLimit | None, wait_ms: float, now_ms: float | None = None
    ) -> float: ...

    def wait_ms(self, name: str, limit: RateLimit | None, now_ms: float | None = None) -> float: ...


class AsyncLimiterStore(Protocol):
    """The same operations for asyncio callers."""

    async def acquire(
        self, name: str, limit: RateLimit | None, max_wait_ms: float, now_ms: float | None = None
    ) -> Reservation: ...

    async def push(
        self, name: str, limit: RateLimit | None, wait_ms: float, now_ms: float | None = None
    ) -> float: ...

    async def wait_ms(
        self, name: str, limit: RateLimit | None, now_ms: float | None = None
    ) -> float: ...


class MemoryLimiterStore:
    """In-process twin of the Redis store."""

    def __init__(self) -> None:
        self.tat: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _now(now_ms: float | None) -> float:
        return time.time() * 1000 if now_ms is None else now_ms

    def acquire(
        self, name: str, limit: RateLimit | None, max_wait_ms: float, now_ms: float | None = None
    ) -> Reservation:
        with self._lock:
            r = rules.reserve(self.tat.get(name, 0.0), self._now(now_ms), limit, max_wait_ms)
            if r.granted:
                self.tat[name] = r.tat_ms
            return r

    def push(
        self, name: str, limit: RateLimit | None, wait_ms: float, now_ms: float | None = None
    ) -> float:
        with self._lock:
            now = self._now(now_ms)
            self.tat[name] = rules.push(self.tat.get(name, 0.0), now + wait_ms, limit)
            return self.tat[name]

    def wait_ms(self, name: str, limit: RateLimit | None, now_ms: float | None = None) -> float:
        return rules.current_wait_ms(self.tat.get(name, 0.0), self._now(now_ms), limit)


class AsyncLimiterAdapter:
    """A synchronous store behind the asyncio API (the memory twin, and tests)."""

    def __init__(self, store: LimiterStore) -> None:
        self.store = store

    async def acquire(
        self, name: str, limit: RateLimit | None, max_wait_ms: float, now_ms: float | None = None
    ) -> Reservation:
        return self.store.acquire(name, limit, max_wait_ms, now_ms)

    async def push(
        self, name: str, limit: RateLimit | None, wait_ms: float, now_ms: float | None = None
    ) -> float:
        return self.store.push(name, limit, wait_ms, now_ms)

    async def wait_ms(
        self, name: str, limit: RateLimit | None, now_ms: float | None = None
    ) -> float:
        return self.store.wait_ms(name, limit, now_ms)


class RedisLimiterStore(SyncClient):
    """Limits in Redis, one Lua script per step, on the server's clock."""

    def acquire(
        self, name: str, limit: RateLimit | None, max_wait_ms: float, now_ms: float | None = None
    ) -> Reservation:
        args = _acquire_args(limit, max_wait_ms, now_ms)
        return _reservation(ACQUIRE_SCRIPT.run(self.client, [keys.rate_limit(name)], args))

    def push(
        self, name: str, limit: RateLimit | None, wait_ms: float, now_ms: float | None = None
    ) -> float:
        args = _push_args(limit, wait_ms, now_ms)
        return float(text(PUSH_SCRIPT.run(self.client, [keys.rate_limit(name)], args)))

    def wait_ms(self, name: str, limit: RateLimit | None, now_ms: float | None = None) -> float:
        return _wait(WAIT_SCRIPT.run(self.client, [keys.rate_limit(name)], []), limit, now_ms)


#: The limit's state and the server's clock in one call (a script: a Redis Cluster pipeline
#: takes only commands with keys, and TIME has none).
WAIT_SCRIPT = LuaScript(
    "local t = redis.call('TIME') return {redis.call('GET', KEYS[1]) or '', t[1], t[2]}"
)


def _wait(raw: Any, limit: RateLimit | None, now_ms: float | None) -> float:
    tat, sec, usec = (text(v) for v in raw)
    now = int(sec) * 1000 + int(usec) / 1000 if now_ms is None else now_ms
    return rules.current_wait_ms(float(tat) if tat else 0.0, now, limit)


class AsyncRedisLimiterStore:
    """:class:`RedisLimiterStore` for asyncio callers."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def acquire(
        self, name: str, limit: RateLimit | None, max_wait_ms: float, now_ms: float | None = None
    ) -> Reservation:
        args = _acquire_args(limit, max_wait_ms, now_ms)
        return _reservation(await ACQUIRE_SCRIPT.arun(self.client, [keys.rate_limit(name)], args))

    async def push(
        self, name: str, limit: RateLimit | None, wait_ms: float, now_ms: float | None = None
    ) -> float:
        args = _push_args(limit, wait_ms, now_ms)
        return float(text(await PUSH_SCRIPT.arun(self.client, [keys.rate_limit(name)], args)))

    async def wait_ms(
        self, name: str, limit: RateLimit | None, now_ms: float | None = None
    ) -> float:
        raw = await WAIT_SCRIPT.arun(self.client, [keys.rate_limit(name)], [])
        return _wait(raw, limit, now_ms)
