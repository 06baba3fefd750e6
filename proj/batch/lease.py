"""Runner leases: which runners of a batch are alive, and who starts a batch whose runners died.

A runner holds a lease in ``proj:batch:{id}:runners`` (zset: runner id -> expiry ms on the
Redis clock) and renews it every third of PROJ_BATCH_RUNNER_LEASE_S. ``proj:batches:leases``
(zset: batch id -> the latest expiry among its runners, or a grace for runners on their way)
lets the watchdog every worker runs (:mod:`proj.batch.watchdog`) find batches whose runners
all let their lease lapse; one atomic step adopts such a batch, so one worker re-dispatches it.

A runner is dead once its lease is gone (lapsed, or taken by the runner that replaces it).
Whoever notices a dead runner (a runner joining or renewing, the watchdog adopting) makes every
item lease of the batch claimable now: the dead runner's items run again at once, and a live
runner's items, claimed again, find its in-flight marker and wait for its result. In-flight
markers name their runner, so the marker of a dead runner is taken over at once instead of
waited out (PROJ_BATCH_LEASE_S).

| runner | in ``:runners`` | its items | its markers |
|---|---|---|---|
| alive | expiry in the future, renewed | leased to it | kept |
| dead (SIGKILL, lost Redis, crashed) | expired or removed | claimable again | taken over |
| surplus (the batch already has its runners) | never added | - | - |
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from proj import keys
from proj.resilience.lua import Arg, LuaScript, text

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function release(leases)
  local idx = redis.call('ZRANGE', leases, 0, -1)
  for i = 1, #idx, 500 do
    local args = {}
    for j = i, math.min(i + 499, #idx) do
      args[#args + 1] = 0
      args[#args + 1] = idx[j]
    end
    redis.call('ZADD', leases, 'XX', unpack(args))
  end
  return #idx
end
"""

# A runner starts: drop dead runners (and the one it replaces), then take a lease unless the
# batch already has its runners. Item leases are released when a dead runner was found.
# KEYS[1] runners, [2] batch hash, [3] item leases, [4] proj:batches:leases
# ARGV[1] runner id, [2] lease ms, [3] id of the runner it replaces or '', [4] '1': join even
# if the batch has its runners (resume), [5] batch id, [6] batch ttl s
# Returns 1 joined, 0 surplus, -1 the batch is finished or gone.
_JOIN = LuaScript(
    _NOW
    + """
if redis.call('HGET', KEYS[2], 'status') ~= 'running' then return -1 end
local dead = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] ~= '' then dead = dead + redis.call('ZREM', KEYS[1], ARGV[3]) end
if dead > 0 then release(KEYS[3]) end
local target = tonumber(redis.call('HGET', KEYS[2], 'runners') or '1')
if ARGV[4] ~= '1' and redis.call('ZCARD', KEYS[1]) >= target then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
redis.call('ZADD', KEYS[4], top[2], ARGV[5])
return 1
"""
)

# A live runner renews its lease; dead runners it finds are dropped and item leases released.
# A runner that renews has lived a third of a lease: the batch's adoption count is reset.
# KEYS[1] runners, [2] batch hash, [3] item leases, [4] proj:batches:leases
# ARGV[1] runner id, [2] lease ms, [3] batch id
# Returns {1 if its own lease had lapsed (re-taken now) else 0, dead runners found}.
_HEARTBEAT = LuaScript(
    _NOW
    + """
local dead = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if dead > 0 then release(KEYS[3]) end
local lapsed = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('HGET', KEYS[2], 'status') == 'running' then
  local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  redis.call('ZADD', KEYS[4], top[2], ARGV[3])
  redis.call('HDEL', KEYS[2], 'adopted')
end
return {lapsed, dead}
"""
)

# A runner stops (hand-over, the end, a failure). Items it still held are released.
# KEYS[1] runners, [2] batch hash, [3] item leases, [4] proj:batches:leases
# ARGV[1] runner id, [2] batch id, [3] '1' if it left items in flight
# Returns 1 if it still held its lease.
_LEAVE = LuaScript(
    _NOW
    + """
local held = redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[3] == '1' then release(KEYS[3]) end
if redis.call('HGET', KEYS[2], 'status') ~= 'running' then redis.call('ZREM', KEYS[4], ARGV[2]) end
return held
"""
)

# Runners were dispatched (submit, resume): give them a lease's time to start.
# KEYS[1] batch hash, [2] proj:batches:leases; ARGV[1] batch id, [2] lease ms, [3] runners the
# batch should have, or '' to keep it
_EXPECT = LuaScript(
    _NOW
    + """
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'runners', ARGV[3]) end
redis.call('ZADD', KEYS[2], 'GT', now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)

# Batches whose runners' leases have all lapsed. KEYS[1] proj:batches:leases; ARGV[1] limit
_ORPHANS = LuaScript(
    _NOW
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""
)

# Adopt a batch whose runners all died, once: of the workers that try, one gets it. The batch
# gets a grace for the runners the adopter dispatches, doubling with each adoption in a row
# (the runners never started, or crashed at once) up to a cap; its item leases are released.
# A finished or expired batch leaves the index.
# KEYS[1] proj:batches:leases, [2] batch hash, [3] runners, [4] item leases
# ARGV[1] batch id, [2] lease ms, [3] cap of the grace ms
# Returns {runners to dispatch, urgent 0|1, adoptions in a row} to the adopter, else {}.
_ADOPT = LuaScript(
    _NOW
    + """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > now then return {} end
local h = redis.call('HMGET', KEYS[2], 'status', 'runners', 'urgent', 'adopted')
if h[1] ~= 'running' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {}
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local top = redis.call('ZREVRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if top[2] then
  redis.call('ZADD', KEYS[1], top[2], ARGV[1])
  return {}
end
local n = tonumber(h[4] or '0')
local grace = math.min(tonumber(ARGV[2]) * 2 ^ n, tonumber(ARGV[3]))
redis.call('HSET', KEYS[2], 'adopted', n + 1)
redis.call('ZADD', KEYS[1], now + grace, ARGV[1])
release(KEYS[4])
return {tonumber(h[2] or '1'), tonumber(h[3] or '0'), n + 1}
"""
)

# Take over an in-flight marker whose runner is dead (or that has just gone).
# KEYS[1] the marker, [2] the runners of the marker's batch
# ARGV[1] the marker's value as read ('' if none), [2] the new value, [3] ttl ms,
# [4] the runner named in the marker
# Returns 1 if the marker is now the caller's.
_TAKE_MARKER = LuaScript(
    _NOW
    + """
local cur = redis.call('GET', KEYS[1])
if cur then
  if cur ~= ARGV[1] then return 0 end
  local due = redis.call('ZSCORE', KEYS[2], ARGV[4])
  if due and tonumber(due) > now then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
return 1
"""
)

#: The adoption grace never grows past this (10 minutes).
ADOPTION_GRACE_CAP_S = 600.0


def new_runner_id(node: str | None) -> str:
    """A runner's identity: its worker node, process and a random part (a redelivered
    message runs as a new runner)."""
    return f"{node or 'local'}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def heartbeat_s(lease_s: float) -> float:
    """How often a runner renews a lease of ``lease_s``: three chances before it lapses."""
    return lease_s / 3


@dataclass(frozen=True)
class Marker:
    """Who computes an item's key right now: ``proj:inflight:{pipeline}:{key}``'s value."""

    batch_id: str
    index: int
    runner: str

    def dumps(self) -> str:
        return json.dumps({"batch": self.batch_id, "index": self.index, "runner": self.runner})

    @classmethod
    def loads(cls, raw: object) -> Marker | None:
        """The marker in ``raw``; None for none, or one that names no runner."""
        if raw is None:
            return None
        try:
            d = json.loads(text(raw))
            return cls(str(d["batch"]), int(d["index"]), str(d["runner"]))
        except (ValueError, TypeError, KeyError):
            return None


def _ms(s: float) -> int:
    return int(s * 1000)


class RunnerLeases:
    """The lease steps, on an asyncio client (runners, the submitter) or a synchronous one
    (the watchdog)."""

    def __init__(self, lease_s: float, ttl_s: int) -> None:
        self.lease_ms = _ms(lease_s)
        self.ttl_s = ttl_s

    @staticmethod
    def _keys(batch_id: str) -> list[str]:
        return [
            keys.batch(batch_id, "runners"),
            keys.batch(batch_id),
            keys.batch(batch_id, "leases"),
            keys.BATCH_LEASES,
        ]

    async def join(
        self,
        r: aioredis.Redis,
        batch_id: str,
        runner: str,
        *,
        replaces: str | None = None,
        forced: bool = False,
    ) -> int:
        """1 joined, 0 surplus (the batch has its runners), -1 finished or gone."""
        args: list[Arg] = [runner, self.lease_ms, replaces or "", "1" if forced else "0"]
        return int(await _JOIN.arun(r, self._keys(batch_id), [*args, batch_id, self.ttl_s]))

    async def heartbeat(self, r: aioredis.Redis, batch_id: str, runner: str) -> tuple[bool, int]:
        """(whether its lease had lapsed, dead runners found)."""
        lapsed, dead = await _HEARTBEAT.arun(
            r, self._keys(batch_id), [runner, self.lease_ms, batch_id]
        )
        return bool(lapsed), int(dead)

    async def leave(self, r: aioredis.Redis, batch_id: str, runner: str, *, orphaned: bool) -> None:
        await _LEAVE.arun(r, self._keys(batch_id), [runner, batch_id, "1" if orphaned else "0"])

    async def expect(self, r: aioredis.Redis, batch_id: str, runners: int | None = None) -> None:
        """Runners were dispatched: they have a lease's time to start."""
        args: list[Arg] = [batch_id, self.lease_ms, "" if runners is None else runners]
        await _EXPECT.arun(r, [keys.batch(batch_id), keys.BATCH_LEASES], args)

    async def take_marker(
        self, r: aioredis.Redis, marker_key: str, seen: object, new: Marker, ttl_ms: int
    ) -> bool:
        """Make ``marker_key`` ``new``'s if it still holds ``seen`` (None: no marker) and the
        runner it names is dead. A marker that names no runner is waited out."""
        owner = Marker.loads(seen)
        if seen is not None and owner is None:
            return False
        runners = keys.batch(owner.batch_id, "runners") if owner else keys.BATCH_LEASES
        args: list[Arg] = [
            "" if seen is None else text(seen),
            new.dumps(),
            ttl_ms,
            owner.runner if owner else "",
        ]
        return bool(await _TAKE_MARKER.arun(r, [marker_key, runners], args))

    # --- the watchdog (synchronous) ------------------------------------------------------
    def orphans(self, r: redis.Redis, limit: int = 20) -> list[str]:
        """Batches whose runners' leases have all lapsed."""
        return [text(b) for b in _ORPHANS.run(r, [keys.BATCH_LEASES], [limit])]

    def adopt(self, r: redis.Redis, batch_id: str) -> tuple[int, bool, int] | None:
        """(runners to dispatch, urgent, adoptions in a row) if this caller adopted the batch."""
        ks = [
            keys.BATCH_LEASES,
            keys.batch(batch_id),
            keys.batch(batch_id, "runners"),
            keys.batch(batch_id, "leases"),
        ]
        out: list[Any] = _ADOPT.run(r, ks, [batch_id, self.lease_ms, _ms(ADOPTION_GRACE_CAP_S)])
        if not out:
            return None
        return int(out[0]), bool(int(out[1])), int(out[2])
