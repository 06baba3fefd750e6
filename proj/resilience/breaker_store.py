"""Where breaker state lives: Redis (shared by every worker on every host) or memory (tests,
single process). Both run the rules of :mod:`proj.resilience.breaker`; one test suite runs
against both.

Redis data model (keys in :mod:`proj.keys`)::

    proj:cb:{name}          hash   state, opened_at_ms, probes_total
    proj:cb:{name}:win      hash   o:<bucket> / f:<bucket> outcome counts (TTL 2 windows)
    proj:cb:{name}:probes   zset   probe id -> lease expiry ms (TTL 2 leases)

Times come from the Redis server's clock (``TIME``), so hosts need not agree on theirs;
tests pass ``now_ms`` to drive the clock.
"""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio as aioredis

from proj import keys
from proj.resilience import breaker as rules
from proj.resilience.breaker import Admission, BreakerPolicy, BreakerState, Snapshot

_NOW = """
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Admit one call (rules.admit).
# KEYS[1] state hash, KEYS[2] probes zset
# ARGV[1] now_ms (0: server clock), [2] open_ms, [3] max probes, [4] lease_ms, [5] probe id,
#     [6] half-open wait ms
# Returns {verdict, wait_ms, state, transitioned 0|1}
ADMIT = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {'allow', 0, 'closed', 0} end
local open_ms = tonumber(ARGV[2])
if state == 'forced-open' then return {'deny', open_ms, state, 0} end
local moved = 0
if state == 'open' then
  local reopen = tonumber(redis.call('HGET', KEYS[1], 'opened_at_ms') or '0') + open_ms
  if now < reopen then return {'deny', reopen - now, 'open', 0} end
  redis.call('HSET', KEYS[1], 'state', 'half-open')
  redis.call('DEL', KEYS[2])
  moved = 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local lease = tonumber(ARGV[4])
if redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], lease * 2)
  redis.call('HINCRBY', KEYS[1], 'probes_total', 1)
  return {'probe', 0, 'half-open', moved}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local wait = math.min(math.max(50, tonumber(first[2]) - now), tonumber(ARGV[6]))
return {'deny', wait, 'half-open', moved}
"""
)

# Record outcomes (rules.record). ok/failed are counts: callers batch them.
# KEYS[1] state hash, KEYS[2] window hash, KEYS[3] probes zset
# ARGV[1] now_ms, [2] ok, [3] failed, [4] probe id or '', [5] bucket_ms, [6] buckets,
#     [7] failure rate threshold, [8] min calls
# Returns {state, from or '', to or ''}
RECORD = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local ok, failed = tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[4] ~= '' then
  if state ~= 'half-open' or redis.call('ZREM', KEYS[3], ARGV[4]) == 0 then
    return {state, '', ''}
  end
  if failed > 0 then
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at_ms', now)
    redis.call('DEL', KEYS[3])
    return {'open', 'half-open', 'open'}
  end
  if ok > 0 then
    redis.call('HSET', KEYS[1], 'state', 'closed')
    redis.call('PEXPIRE', KEYS[1], 86400000)
    redis.call('DEL', KEYS[2], KEYS[3])
    return {'closed', 'half-open', 'closed'}
  end
  return {state, '', ''}
end
if state ~= 'closed' or ok + failed == 0 then return {state, '', ''} end
local bucket_ms, buckets = tonumber(ARGV[5]), tonumber(ARGV[6])
local bucket = math.floor(now / bucket_ms)
redis.call('HINCRBY', KEYS[2], 'o:' .. bucket, ok)
redis.call('HINCRBY', KEYS[2], 'f:' .. bucket, failed)
redis.call('PEXPIRE', KEYS[2], bucket_ms * buckets * 2)
local calls, fails = 0, 0
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  local b = tonumber(string.sub(fields[i], 3))
  if b > bucket - buckets then
    local n = tonumber(fields[i + 1])
    calls = calls + n
    if string.sub(fields[i], 1, 1) == 'f' then fails = fails + n end
  else
    redis.call('HDEL', KEYS[2], fields[i])
  end
end
if calls >= tonumber(ARGV[8]) and fails / calls > tonumber(ARGV[7]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at_ms', now)
  redis.call('PERSIST', KEYS[1])
  redis.call('DEL', KEYS[2])
  return {'open', 'closed', 'open'}
end
return {'closed', '', ''}
"""
)

# Operator override (rules.force). KEYS as RECORD; ARGV[1] now_ms, [2] 'forced-open'|'closed'
# Returns {old state, new state}
FORCE = (
    _NOW
    + """
local old = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[2] == 'forced-open' then
  redis.call('HSET', KEYS[1], 'state', 'forced-open', 'opened_at_ms', now)
  redis.call('PERSIST', KEYS[1])
  redis.call('DEL', KEYS[3])
else
  redis.call('HSET', KEYS[1], 'state', 'closed')
  redis.call('PEXPIRE', KEYS[1], 86400000)
  redis.call('DEL', KEYS[2], KEYS[3])
end
return {old, ARGV[2]}
"""
)


def _ms(now_ms: int | None) -> int:
    return 0 if now_ms is None else int(now_ms)


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class BreakerStore(Protocol):
    async def admit(
        self, name: str, policy: BreakerPolicy, probe_id: str, now_ms: int | None = None
    ) -> Admission: ...

    async def record(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        ok: int = 0,
        failed: int = 0,
        probe_id: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[str, tuple[str, str] | None]: ...

    async def force(
        self, name: str, state: str, now_ms: int | None = None
    ) -> tuple[str, str] | None: ...

    async def snapshot(
        self, name: str, policy: BreakerPolicy, now_ms: int | None = None
    ) -> Snapshot: ...

    async def names(self) -> list[str]: ...


class MemoryBreakerStore:
    """In-process twin of the Redis store: same rules, a dict for state."""

    def __init__(self) -> None:
        self.states: dict[str, BreakerState] = {}

    def _now(self, now_ms: int | None) -> int:
        return int(time.time() * 1000) if now_ms is None else now_ms

    def _state(self, name: str) -> BreakerState:
        return self.states.setdefault(name, BreakerState())

    async def admit(
        self, name: str, policy: BreakerPolicy, probe_id: str, now_ms: int | None = None
    ) -> Admission:
        return rules.admit(policy, self._state(name), self._now(now_ms), probe_id)

    async def record(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        ok: int = 0,
        failed: int = 0,
        probe_id: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[str, tuple[str, str] | None]:
        s = self._state(name)
        moved = rules.record(policy, s, self._now(now_ms), ok=ok, failed=failed, probe_id=probe_id)
        return s.state, moved

    async def force(
        self, name: str, state: str, now_ms: int | None = None
    ) -> tuple[str, str] | None:
        return rules.force(self._state(name), state, self._now(now_ms))

    async def snapshot(
        self, name: str, policy: BreakerPolicy, now_ms: int | None = None
    ) -> Snapshot:
        return rules.snapshot(name, policy, self._state(name), self._now(now_ms))

    async def names(self) -> list[str]:
        return sorted(self.states)


class RedisBreakerStore:
    """Breaker state in Redis; every step is one Lua script, so it is atomic cluster-wide."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._admit = client.register_script(ADMIT)
        self._record = client.register_script(RECORD)
        self._force = client.register_script(FORCE)

    @staticmethod
    def _keys(name: str) -> list[str]:
        return [keys.breaker(name), keys.breaker_window(name), keys.breaker_probes(name)]

    async def admit(
        self, name: str, policy: BreakerPolicy, probe_id: str, now_ms: int | None = None
    ) -> Admission:
        k = self._keys(name)
        verdict, wait_ms, state, moved = await self._admit(
            keys=[k[0], k[2]],
            args=[
                _ms(now_ms),
                int(policy.open_s * 1000),
                policy.probes,
                int(policy.probe_lease_s * 1000),
                probe_id,
                int(policy.half_open_wait_s * 1000),
            ],
        )
        v = _s(verdict)
        return Admission(
            v,  # type: ignore[arg-type]
            int(wait_ms) / 1000,
            probe_id if v == "probe" else None,
            _s(state),
            (rules.OPEN, rules.HALF_OPEN) if int(moved) else None,
        )

    async def record(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        ok: int = 0,
        failed: int = 0,
        probe_id: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[str, tuple[str, str] | None]:
        state, old, new = await self._record(
            keys=self._keys(name),
            args=[
                _ms(now_ms),
                ok,
                failed,
                probe_id or "",
                policy.bucket_ms,
                policy.window_buckets,
                repr(policy.failure_rate),
                policy.min_calls,
            ],
        )
        return _s(state), ((_s(old), _s(new)) if _s(old) else None)

    async def force(
        self, name: str, state: str, now_ms: int | None = None
    ) -> tuple[str, str] | None:
        if state not in (rules.FORCED_OPEN, rules.CLOSED):
            raise ValueError(f"can force {rules.FORCED_OPEN!r} or {rules.CLOSED!r}, got {state!r}")
        old, new = await self._force(keys=self._keys(name), args=[_ms(now_ms), state])
        return None if _s(old) == _s(new) else (_s(old), _s(new))

    async def snapshot(
        self, name: str, policy: BreakerPolicy, now_ms: int | None = None
    ) -> Snapshot:
        k = self._keys(name)
        raw = await self.client.hgetall(k[0])
        win = await self.client.hgetall(k[1])
        if now_ms is None:
            sec, usec = await self.client.time()
            now_ms = sec * 1000 + usec // 1000
        fields = {_s(a): _s(b) for a, b in raw.items()}
        s = BreakerState(
            state=fields.get("state", rules.CLOSED),
            opened_at_ms=int(fields.get("opened_at_ms", 0)),
            probes_total=int(fields.get("probes_total", 0)),
        )
        for f, n in win.items():
            kind, bucket = _s(f).split(":", 1)
            counts = s.buckets.setdefault(int(bucket), [0, 0])
            counts[0 if kind == "o" else 1] += int(n)
        return rules.snapshot(name, policy, s, now_ms)

    async def names(self) -> list[str]:
        found = set()
        async for key in self.client.scan_iter(match=keys.BREAKER_PATTERN, count=500):
            name = _s(key).split(":", 2)[2]
            if not name.endswith((":win", ":probes")):
                found.add(name)
        return sorted(found)
