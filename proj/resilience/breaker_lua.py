"""The breaker rules of :mod:`proj.resilience.breaker` as Redis Lua scripts (one round trip
and atomic per admission, outcome or forced state), with the arguments each takes and what its
reply means. :mod:`proj.resilience.breaker_store` runs them; the data model is described
there."""

from __future__ import annotations

from typing import Any

from proj import keys
from proj.resilience import breaker as rules
from proj.resilience.breaker import Admission, BreakerPolicy, BreakerState
from proj.resilience.lua import Arg, LuaScript, text

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


def breaker_keys(name: str) -> list[str]:
    return [keys.breaker(name), keys.breaker_window(name), keys.breaker_probes(name)]


def now_arg(now_ms: int | None) -> int:
    return 0 if now_ms is None else int(now_ms)


def admit_args(policy: BreakerPolicy, probe_id: str, now_ms: int | None) -> list[Arg]:
    return [
        now_arg(now_ms),
        int(policy.open_s * 1000),
        policy.probes,
        int(policy.probe_lease_s * 1000),
        probe_id,
        int(policy.half_open_wait_s * 1000),
    ]


def admission(reply: list[Any], probe_id: str) -> Admission:
    verdict, wait_ms, state, moved = reply
    v = text(verdict)
    return Admission(
        v,  # type: ignore[arg-type]
        int(wait_ms) / 1000,
        probe_id if v == "probe" else None,
        text(state),
        (rules.OPEN, rules.HALF_OPEN) if int(moved) else None,
    )


def record_args(
    policy: BreakerPolicy, ok: int, failed: int, probe_id: str | None, now_ms: int | None
) -> list[Arg]:
    return [
        now_arg(now_ms),
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


def recorded(reply: list[Any]) -> tuple[str, tuple[str, str] | None, float]:
    state, old, new = (text(v) for v in reply[:3])
    return state, ((old, new) if old else None), float(text(reply[3])) / 1000


def check_forceable(state: str) -> None:
    if state not in rules.FORCEABLE:
        raise ValueError(f"state must be one of {', '.join(rules.FORCEABLE)}, got {state!r}")


def forced(reply: list[Any]) -> tuple[str, str] | None:
    old, new = (text(v) for v in reply)
    return None if old == new else (old, new)


def state_from(raw: dict[Any, Any], win: dict[Any, Any]) -> BreakerState:
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


def name_of(key: object) -> str | None:
    """The breaker name in a state key (``proj:cb:{name}``), None for any other key."""
    k = text(key)
    head = keys.breaker("")[:-2]  # "proj:cb:"
    if not (k.startswith(head + "{") and k.endswith("}")):
        return None
    return k[len(head) + 1 : -1] or None
