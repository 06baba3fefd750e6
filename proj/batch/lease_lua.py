"""The runner-lease steps of :mod:`proj.batch.lease` as Redis Lua scripts, with the keys and
arguments each takes and what its reply means. Each touches one hash slot: a batch's keys, the
watchdog's index alone, or one in-flight marker alone."""

from __future__ import annotations

from proj.resilience.lua import NOW_MS as _CLOCK
from proj.resilience.lua import LuaScript

# The steps on a batch: KEYS[1] its hash, [2] its runners, [3] its item leases (one slot).
# Shared by them: release() makes every item lease claimable now; due() is what the caller
# writes to the watchdog's index: the latest runner lease or the grace (watch_at), whichever
# is later, or -1 (the batch is done, its last step run, or gone, and leaves the index).
_BATCH = (
    _CLOCK
    + """
local function release()
  local idx = redis.call('ZRANGE', KEYS[3], 0, -1)
  for i = 1, #idx, 500 do
    local args = {}
    for j = i, math.min(i + 499, #idx) do
      args[#args + 1] = 0
      args[#args + 1] = idx[j]
    end
    redis.call('ZADD', KEYS[3], 'XX', unpack(args))
  end
end
-- The batch's status, and whether it is finished with its last step still to run (not run,
-- and not given up: see ADOPT).
local function state()
  local st = redis.call('HMGET', KEYS[1], 'status', 'finalized', 'last_step_failed')
  return st[1], st[1] == 'finished' and not st[2] and not st[3]
end
local function due()
  local status, last_step = state()
  if status ~= 'running' and not last_step then return -1 end
  local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local grace = redis.call('HGET', KEYS[1], 'watch_at')
  return math.max(tonumber(top[2] or '0'), tonumber(grace or '0'))
end
"""
)

# A runner starts: drop dead runners (and the one it replaces), then take a lease unless the
# batch already has its runners. Item leases are released when a dead runner was found. A
# runner that joins ends the grace for runners on their way. A batch that is finished but
# whose last step never ran (its runner died in it) is taken by one runner, for that step.
# ARGV[1] runner id, [2] lease ms, [3] id of the runner it replaces or '', [4] '1': join even
# if the batch has its runners (resume), [5] batch ttl s
# Returns {1 joined, 2 joined for the last step only, 0 surplus, -1 the batch is finished
# (last step done) or gone; the index's due}.
JOIN = LuaScript(
    _BATCH
    + """
local status, last_step = state()
if last_step then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) > 0 then return {0, due()} end  -- its runner is at it
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
  redis.call('HDEL', KEYS[1], 'watch_at')
  return {2, due()}
end
if status ~= 'running' then return {-1, -1} end
local dead = redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if ARGV[3] ~= '' then dead = dead + redis.call('ZREM', KEYS[2], ARGV[3]) end
if dead > 0 then release() end
local target = tonumber(redis.call('HGET', KEYS[1], 'runners') or '1')
if ARGV[4] ~= '1' and redis.call('ZCARD', KEYS[2]) >= target then return {0, 0} end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
redis.call('HDEL', KEYS[1], 'watch_at')
return {1, due()}
"""
)

# A live runner renews its lease; dead runners it finds are dropped and item leases released.
# A runner that renews has lived a third of a lease: the batch's adoption count and grace end.
# ARGV[1] runner id, [2] lease ms
# Returns {1 if its own lease had lapsed (re-taken now) else 0, dead runners found, due}.
HEARTBEAT = LuaScript(
    _BATCH
    + """
local dead = redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if dead > 0 then release() end
local lapsed = redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('HGET', KEYS[1], 'status') == 'running' then
  redis.call('HDEL', KEYS[1], 'adopted', 'watch_at')
end
return {lapsed, dead, due()}
"""
)

# A runner stops (hand-over, the end, a failure). Items it still held are released. The index
# keeps its due while the batch runs, or is finished without its last step: a hand-over whose
# next runner never starts, or a last step that failed, is adopted once this runner's lease
# would have lapsed.
# ARGV[1] runner id, [2] '1' if it left items in flight
# Returns -1 if the batch is done (finished, last step run) or gone (it leaves the index),
# else 0.
LEAVE = LuaScript(
    _BATCH
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == '1' then release() end
local status, last_step = state()
if status == 'running' or last_step then return 0 end
return -1
"""
)

# Runners were dispatched (submit, resume): give them a lease's time to start.
# ARGV[1] lease ms, [2] runners the batch should have, or '' to keep it. Returns the due.
EXPECT = LuaScript(
    _BATCH
    + """
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'runners', ARGV[2]) end
local at = now + tonumber(ARGV[1])
if at > tonumber(redis.call('HGET', KEYS[1], 'watch_at') or '0') then
  redis.call('HSET', KEYS[1], 'watch_at', at)
end
return due()
"""
)

# Adopt a batch whose runners all died (or died in its last step), once: of the workers that
# try, one gets it (no live
# runner and no grace: the winner sets a grace at once). The grace is for the runners the
# adopter dispatches, doubling with each adoption in a row (the runners never started, or
# crashed at once) up to a cap; its item leases are released.
# A last step adopted ARGV[3] times in a row (it fails, or kills its runner, every time) is
# given up: the batch is marked last_step_failed and leaves the index.
# ARGV[1] lease ms, [2] cap of the grace ms, [3] last-step tries
# Returns {due, runners to dispatch, urgent 0|1, adoptions in a row} to the adopter, else
# {due} (-1: the batch is done or gone; -2: its last step was given up now).
ADOPT = LuaScript(
    _BATCH
    + """
local status, last_step = state()  -- a last step is run by one runner
if status ~= 'running' and not last_step then return {-1} end
local h = redis.call('HMGET', KEYS[1], 'status', 'runners', 'urgent', 'adopted', 'watch_at')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) > 0 or tonumber(h[5] or '0') > now then return {due()} end
local n = tonumber(h[4] or '0')
if last_step and n >= tonumber(ARGV[3]) then  -- it failed every time: give up, say so
  redis.call('HSET', KEYS[1], 'last_step_failed', now)
  return {-2}
end
local at = now + math.min(tonumber(ARGV[1]) * 2 ^ n, tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'adopted', n + 1, 'watch_at', at)
release()
return {at, last_step and 1 or tonumber(h[2] or '1'), tonumber(h[3] or '0'), n + 1}
"""
)

# Batches the index says are due now. KEYS[1] proj:batches:leases; ARGV[1] limit
ORPHANS = LuaScript(
    _CLOCK
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""
)

# Is this runner's lease live? KEYS[1] the runners of its batch; ARGV[1] runner id. 1 or 0.
LIVE = LuaScript(
    _CLOCK
    + """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if due and tonumber(due) > now then return 1 end
return 0
"""
)

# Set an in-flight marker if it still holds what the caller read.
# KEYS[1] the marker; ARGV[1] its value as read ('' if none), [2] the new value, [3] ttl ms
# Returns 1 if the marker is now the caller's.
SWAP = LuaScript(
    """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
return 1
"""
)
