"""Where breaker state lives: Redis (shared by every worker on every host) or memory (tests,
single process). Both run the rules of :mod:`proj.resilience.breaker`; one test suite runs
against both.

Redis data model (keys in :mod:`proj.keys`)::

    proj:cb:{name}          hash   state, opened_at_ms, probes_total, fail_counter,
                                   success_counter (pybreaker's counters)
    proj:cb:{name}:win      hash   o:<bucket> / f:<bucket> outcome counts (TTL 2 windows)
    proj:cb:{name}:probes   zset   probe id -> lease expiry ms (TTL 2 leases)

Times come from the Redis server's clock (``TIME``), so hosts need not agree on theirs;
tests pass ``now_ms`` to drive the clock.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

import redis.asyncio as aioredis

from proj import keys
from proj.resilience import breaker as rules
from proj.resilience.breaker import Admission, BreakerPolicy, BreakerState, Snapshot
from proj.resilience.lua import Arg, LuaScript, SyncClient, text

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
#     [7] failure rate threshold, [8] min calls, [9] fail_max (0: the rate rule),
#     [10] success threshold, [11] open ms
# Returns {state, from or '', to or '', ms until it may half-open (0 unless open)}
RECORD = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local ok, failed = tonumber(ARGV[2]), tonumber(ARGV[3])
local function stay_away()
  if state ~= 'open' then return 0 end
  local reopen = tonumber(redis.call('HGET', KEYS[1], 'opened_at_ms') or '0') + tonumber(ARGV[11])
  return math.max(0, reopen - now)
end
if ARGV[4] ~= '' then
  if state ~= 'half-open' then return {state, '', '', stay_away()} end
  -- A probe past its lease (a long task) still counts while the breaker is half-open.
  redis.call('ZREM', KEYS[3], ARGV[4])
  if failed > 0 then
    redis.call('HINCRBY', KEYS[1], 'fail_counter', failed)
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at_ms', now, 'success_counter', 0)
    redis.call('DEL', KEYS[3])
    return {'open', 'half-open', 'open', tonumber(ARGV[11])}
  end
  if ok > 0 then
    redis.call('HSET', KEYS[1], 'fail_counter', 0)
    local succ = redis.call('HINCRBY', KEYS[1], 'success_counter', ok)
    if succ >= tonumber(ARGV[10]) then
      redis.call('HSET', KEYS[1], 'state', 'closed', 'success_counter', 0)
      redis.call('PEXPIRE', KEYS[1], 86400000)
      redis.call('DEL', KEYS[2], KEYS[3])
      return {'closed', 'half-open', 'closed', 0}
    end
  end
  return {state, '', '', 0}
end
if state ~= 'closed' or ok + failed == 0 then return {state, '', '', stay_away()} end
if ok > 0 then redis.call('HSET', KEYS[1], 'fail_counter', 0) end
local in_a_row = tonumber(redis.call('HINCRBY', KEYS[1], 'fail_counter', failed))
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
local fail_max = tonumber(ARGV[9])
local trip
if fail_max > 0 then
  trip = in_a_row >= fail_max
else
  trip = calls >= tonumber(ARGV[8]) and fails / calls > tonumber(ARGV[7])
end
if trip then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at_ms', now, 'success_counter', 0)
  redis.call('PERSIST', KEYS[1])
  redis.call('DEL', KEYS[2])
  return {'open', 'closed', 'open', tonumber(ARGV[11])}
end
redis.call('PEXPIRE', KEYS[1], 86400000)
return {'closed', '', '', 0}
"""
)

# Set the state by hand (rules.force). KEYS as RECORD; ARGV[1] now_ms, [2] the state
# Returns {old state, new state}
FORCE = (
    _NOW
    + """
local old = redis.call('HGET', KEYS[1], 'state') or 'closed'
local new = ARGV[2]
if new == 'open' or new == 'forced-open' then
  redis.call('HSET', KEYS[1], 'state', new, 'opened_at_ms', now, 'success_counter', 0)
  redis.call('PERSIST', KEYS[1])
  redis.call('DEL', KEYS[3])
elseif new == 'half-open' then
  redis.call('HSET', KEYS[1], 'state', new, 'success_counter', 0)
  redis.call('PERSIST', KEYS[1])
  redis.call('DEL', KEYS[3])
else
  redis.call('HSET', KEYS[1], 'state', 'closed', 'fail_counter', 0, 'success_counter', 0)
  redis.call('PEXPIRE', KEYS[1], 86400000)
  redis.call('DEL', KEYS[2], KEYS[3])
end
return {old, new}
"""
)


ADMIT_SCRIPT = LuaScript(ADMIT)
RECORD_SCRIPT = LuaScript(RECORD)
FORCE_SCRIPT = LuaScript(FORCE)


def _keys(name: str) -> list[str]:
    return [keys.breaker(name), keys.breaker_window(name), keys.breaker_probes(name)]


def _ms(now_ms: int | None) -> int:
    return 0 if now_ms is None else int(now_ms)


def _admit_args(policy: BreakerPolicy, probe_id: str, now_ms: int | None) -> list[Arg]:
    return [
        _ms(now_ms),
        int(policy.open_s * 1000),
        policy.probes,
        int(policy.probe_lease_s * 1000),
        probe_id,
        int(policy.half_open_wait_s * 1000),
    ]


def _admission(reply: list[Any], probe_id: str) -> Admission:
    verdict, wait_ms, state, moved = reply
    v = text(verdict)
    return Admission(
        v,  # type: ignore[arg-type]
        int(wait_ms) / 1000,
        probe_id if v == "probe" else None,
        text(state),
        (rules.OPEN, rules.HALF_OPEN) if int(moved) else None,
    )


def _record_args(
    policy: BreakerPolicy, ok: int, failed: int, probe_id: str | None, now_ms: int | None
) -> list[Arg]:
    return [
        _ms(now_ms),
        ok,
        failed,
        probe_id or "",
        policy.bucket_ms,
        policy.window_buckets,
        repr(policy.failure_rate),
        policy.min_calls,
        policy.fail_max or 0,
        policy.success_threshold,
        int(policy.open_s * 1000),
    ]


def _recorded(reply: list[Any]) -> tuple[str, tuple[str, str] | None, float]:
    state, old, new = (text(v) for v in reply[:3])
    return state, ((old, new) if old else None), float(text(reply[3])) / 1000


def _check_forceable(state: str) -> None:
    if state not in rules.FORCEABLE:
        raise ValueError(f"state must be one of {', '.join(rules.FORCEABLE)}, got {state!r}")


def _forced(reply: list[Any]) -> tuple[str, str] | None:
    old, new = (text(v) for v in reply)
    return None if old == new else (old, new)


def _state_from(raw: dict[Any, Any], win: dict[Any, Any]) -> BreakerState:
    fields = {text(a): text(b) for a, b in raw.items()}
    s = BreakerState(
        state=fields.get("state", rules.CLOSED),
        opened_at_ms=int(float(fields.get("opened_at_ms", 0))),
        probes_total=int(fields.get("probes_total", 0)),
        fail_counter=int(fields.get("fail_counter", 0)),
        success_counter=int(fields.get("success_counter", 0)),
    )
    for f, n in win.items():
        kind, _, bucket = text(f).partition(":")
        if bucket.lstrip("-").isdigit():
            counts = s.buckets.setdefault(int(bucket), [0, 0])
            counts[0 if kind == "o" else 1] += int(n)
    return s


def _name_of(key: object) -> str | None:
    """The breaker name in a state key, None for its window and probes keys."""
    name = text(key)[len(keys.breaker("")) :]
    return None if name.endswith((":win", ":probes")) else name


class BreakerStore(Protocol):
    """Where a breaker's state lives (synchronous API)."""

    def admit(
        self, name: str, policy: BreakerPolicy, probe_id: str, now_ms: int | None = None
    ) -> Admission: ...

    def record(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        ok: int = 0,
        failed: int = 0,
        probe_id: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[str, tuple[str, str] | None, float]: ...

    def force(self, name: str, state: str, now_ms: int | None = None) -> tuple[str, str] | None: ...

    def snapshot(self, name: str, policy: BreakerPolicy, now_ms: int | None = None) -> Snapshot: ...

    def names(self) -> list[str]: ...


class AsyncBreakerStore(Protocol):
    """The same operations for asyncio callers."""

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
    ) -> tuple[str, tuple[str, str] | None, float]: ...

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
        self._lock = threading.Lock()

    def _now(self, now_ms: int | None) -> int:
        return int(time.time() * 1000) if now_ms is None else now_ms

    def _state(self, name: str) -> BreakerState:
        return self.states.setdefault(name, BreakerState())

    def admit(
        self, name: str, policy: BreakerPolicy, probe_id: str, now_ms: int | None = None
    ) -> Admission:
        with self._lock:
            return rules.admit(policy, self._state(name), self._now(now_ms), probe_id)

    def record(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        ok: int = 0,
        failed: int = 0,
        probe_id: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[str, tuple[str, str] | None, float]:
        with self._lock:
            s = self._state(name)
            now = self._now(now_ms)
            moved = rules.record(policy, s, now, ok=ok, failed=failed, probe_id=probe_id)
            return s.state, moved, rules.wait_s(policy, s, now)

    def force(self, name: str, state: str, now_ms: int | None = None) -> tuple[str, str] | None:
        with self._lock:
            return rules.force(self._state(name), state, self._now(now_ms))

    def snapshot(self, name: str, policy: BreakerPolicy, now_ms: int | None = None) -> Snapshot:
        with self._lock:
            return rules.snapshot(name, policy, self._state(name), self._now(now_ms))

    def names(self) -> list[str]:
        return sorted(self.states)


class AsyncAdapter:
    """A synchronous store behind the asyncio API (the memory twin, and tests)."""

    def __init__(self, store: BreakerStore) -> None:
        self.store = store

    async def admit(
        self, name: str, policy: BreakerPolicy, probe_id: str, now_ms: int | None = None
    ) -> Admission:
        return self.store.admit(name, policy, probe_id, now_ms)

    async def record(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        ok: int = 0,
        failed: int = 0,
        probe_id: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[str, tuple[str, str] | None, float]:
        return self.store.record(
            name, policy, ok=ok, failed=failed, probe_id=probe_id, now_ms=now_ms
        )

    async def force(
        self, name: str, state: str, now_ms: int | None = None
    ) -> tuple[str, str] | None:
        return self.store.force(name, state, now_ms)

    async def snapshot(
        self, name: str, policy: BreakerPolicy, now_ms: int | None = None
    ) -> Snapshot:
        return self.store.snapshot(name, policy, now_ms)

    async def names(self) -> list[str]:
        return self.store.names()


class RedisBreakerStore(SyncClient):
    """Breaker state in Redis; every step is one Lua script, so it is atomic cluster-wide.
    Works with clients made with or without ``decode_responses``."""

    def register(self, name: str, policy: BreakerPolicy) -> None:
        """List the breaker and its rule for ``proj breakers``."""
        self.client.hset(keys.BREAKER_REGISTRY, name, policy.model_dump_json())

    def registered(self) -> dict[str, str]:
        """Every listed breaker: name -> JSON of its policy."""
        raw = self.client.hgetall(keys.BREAKER_REGISTRY)
        return {text(k): text(v) for k, v in raw.items()}

    def admit(
        self, name: str, policy: BreakerPolicy, probe_id: str, now_ms: int | None = None
    ) -> Admission:
        k = _keys(name)
        reply = ADMIT_SCRIPT.run(self.client, [k[0], k[2]], _admit_args(policy, probe_id, now_ms))
        return _admission(reply, probe_id)

    def record(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        ok: int = 0,
        failed: int = 0,
        probe_id: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[str, tuple[str, str] | None, float]:
        args = _record_args(policy, ok, failed, probe_id, now_ms)
        return _recorded(RECORD_SCRIPT.run(self.client, _keys(name), args))

    def force(self, name: str, state: str, now_ms: int | None = None) -> tuple[str, str] | None:
        _check_forceable(state)
        return _forced(FORCE_SCRIPT.run(self.client, _keys(name), [_ms(now_ms), state]))

    def snapshot(self, name: str, policy: BreakerPolicy, now_ms: int | None = None) -> Snapshot:
        k = _keys(name)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(k[0])
        pipe.hgetall(k[1])
        pipe.time()
        raw, win, (sec, usec) = pipe.execute()
        now = sec * 1000 + usec // 1000 if now_ms is None else now_ms
        return rules.snapshot(name, policy, _state_from(raw, win), now)

    def names(self) -> list[str]:
        found = {_name_of(k) for k in self.client.scan_iter(match=keys.BREAKER_PATTERN, count=500)}
        return sorted(n for n in found if n)


class AsyncRedisBreakerStore:
    """:class:`RedisBreakerStore` for asyncio callers (a ``redis.asyncio`` client)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def admit(
        self, name: str, policy: BreakerPolicy, probe_id: str, now_ms: int | None = None
    ) -> Admission:
        k = _keys(name)
        args = _admit_args(policy, probe_id, now_ms)
        return _admission(await ADMIT_SCRIPT.arun(self.client, [k[0], k[2]], args), probe_id)

    async def record(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        ok: int = 0,
        failed: int = 0,
        probe_id: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[str, tuple[str, str] | None, float]:
        args = _record_args(policy, ok, failed, probe_id, now_ms)
        return _recorded(await RECORD_SCRIPT.arun(self.client, _keys(name), args))

    async def force(
        self, name: str, state: str, now_ms: int | None = None
    ) -> tuple[str, str] | None:
        _check_forceable(state)
        return _forced(await FORCE_SCRIPT.arun(self.client, _keys(name), [_ms(now_ms), state]))

    async def snapshot(
        self, name: str, policy: BreakerPolicy, now_ms: int | None = None
    ) -> Snapshot:
        k = _keys(name)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(k[0])
            pipe.hgetall(k[1])
            pipe.time()
            raw, win, (sec, usec) = await pipe.execute()
        now = sec * 1000 + usec // 1000 if now_ms is None else now_ms
        return rules.snapshot(name, policy, _state_from(raw, win), now)

    async def names(self) -> list[str]:
        found = set()
        async for key in self.client.scan_iter(match=keys.BREAKER_PATTERN, count=500):
            found.add(_name_of(key))
        return sorted(n for n in found if n)
