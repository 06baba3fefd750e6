"""Where rate limits live: Redis (``proj:rl:{name}``, one string each) or memory."""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio as aioredis

from proj import keys
from proj.resilience import ratelimit as rules
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


def _args(limit: RateLimit | None) -> tuple[float, float]:
    return (limit.interval_ms, limit.tolerance_ms) if limit else (0.0, 0.0)


class LimiterStore(Protocol):
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
    def __init__(self) -> None:
        self.tat: dict[str, float] = {}

    @staticmethod
    def _now(now_ms: float | None) -> float:
        return time.time() * 1000 if now_ms is None else now_ms

    async def acquire(
        self, name: str, limit: RateLimit | None, max_wait_ms: float, now_ms: float | None = None
    ) -> Reservation:
        r = rules.reserve(self.tat.get(name, 0.0), self._now(now_ms), limit, max_wait_ms)
        if r.granted:
            self.tat[name] = r.tat_ms
        return r

    async def push(
        self, name: str, limit: RateLimit | None, wait_ms: float, now_ms: float | None = None
    ) -> float:
        now = self._now(now_ms)
        self.tat[name] = rules.push(self.tat.get(name, 0.0), now + wait_ms, limit)
        return self.tat[name]

    async def wait_ms(
        self, name: str, limit: RateLimit | None, now_ms: float | None = None
    ) -> float:
        return rules.current_wait_ms(self.tat.get(name, 0.0), self._now(now_ms), limit)


class RedisLimiterStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._acquire = client.register_script(ACQUIRE)
        self._push = client.register_script(PUSH)

    async def acquire(
        self, name: str, limit: RateLimit | None, max_wait_ms: float, now_ms: float | None = None
    ) -> Reservation:
        interval, tau = _args(limit)
        granted, wait = await self._acquire(
            keys=[keys.rate_limit(name)],
            args=[now_ms or 0, repr(interval), repr(tau), 1, repr(max_wait_ms)],
        )
        return Reservation(bool(int(granted)), float(wait), 0.0)

    async def push(
        self, name: str, limit: RateLimit | None, wait_ms: float, now_ms: float | None = None
    ) -> float:
        interval, tau = _args(limit)
        tat = await self._push(
            keys=[keys.rate_limit(name)],
            args=[now_ms or 0, repr(interval), repr(tau), repr(wait_ms)],
        )
        return float(tat)

    async def wait_ms(
        self, name: str, limit: RateLimit | None, now_ms: float | None = None
    ) -> float:
        raw = await self.client.get(keys.rate_limit(name))
        if now_ms is None:
            sec, usec = await self.client.time()
            now_ms = sec * 1000 + usec / 1000
        return rules.current_wait_ms(float(raw or 0), now_ms, limit)
