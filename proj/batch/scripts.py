"""The batch store's atomic steps (:class:`proj.batch.store.BatchStore`), one Lua script each.

Every script reads the time from Redis (``now``, ms), so runners on many hosts share one clock.
"""

from __future__ import annotations

from proj.resilience.lua import NOW_MS as _NOW

# Claim up to n items: ready delayed ones first, then new ones, then expired leases.
# KEYS[1] batch hash, [2] leases, [3] delayed, [4] state, [5] order (may not exist)
# ARGV[1] n, [2] lease ms, [3] ttl s
# Returns the claimed indexes.
CLAIM = (
    _NOW
    + """
local n, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
local function take(idx)
  if redis.call('HEXISTS', KEYS[4], idx) == 0 then
    redis.call('ZADD', KEYS[2], now + lease, idx)
    out[#out + 1] = idx
  end
end
for _, idx in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, n)) do
  redis.call('ZREM', KEYS[3], idx)
  take(idx)
end
if #out < n then
  local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
  local nxt = tonumber(redis.call('HGET', KEYS[1], 'next') or '0')
  local stop = math.min(total, nxt + n - #out)
  if stop > nxt then
    redis.call('HSET', KEYS[1], 'next', stop)
    -- KEYS[5]: claim position -> index when items carry priorities (highest first)
    local ordered = redis.call('EXISTS', KEYS[5]) == 1
    for pos = nxt, stop - 1 do
      if ordered then take(redis.call('HGET', KEYS[5], pos)) else take(tostring(pos)) end
    end
  end
end
if #out < n then
  for _, idx in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, n - #out)) do
    take(idx)
  end
end
redis.call('HSET', KEYS[1], 'updated', now)
for i = 1, 5 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3])) end
return out
"""
)

# Record finished items. ARGV: ttl s, then triples (index, 'done'|'failed'|'cached', payload)
# (payload: result JSON, or error JSON for 'failed').
# KEYS[1] batch hash, [2] leases, [3] state, [4] results, [5] errors
# Returns {done, failed, total, pass, status} after the update.
COMPLETE = (
    _NOW
    + """
for i = 2, #ARGV, 3 do
  local idx, how, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('ZREM', KEYS[2], idx)
  local prev = redis.call('HGET', KEYS[3], idx)
  if how == 'failed' then
    if not prev then
      redis.call('HSET', KEYS[3], idx, 'failed')
      redis.call('HSET', KEYS[5], idx, payload)
      redis.call('HINCRBY', KEYS[1], 'failed', 1)
    end
  elseif prev ~= 'done' then
    if redis.call('HSETNX', KEYS[4], idx, payload) == 1 then
      redis.call('HSET', KEYS[3], idx, 'done')
      redis.call('HINCRBY', KEYS[1], 'done', 1)
      if how == 'cached' then redis.call('HINCRBY', KEYS[1], 'cached', 1) end
      if prev == 'failed' then redis.call('HINCRBY', KEYS[1], 'failed', -1) end
    end
  end
end
redis.call('HSET', KEYS[1], 'updated', now)
for i = 1, 5 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[1])) end
return redis.call('HMGET', KEYS[1], 'done', 'failed', 'total', 'pass', 'status')
"""
)

# Put an item back to run after a wait (deferral, or a retry with backoff).
# KEYS[1] leases, [2] delayed, [3] attempts; ARGV[1] index, [2] wait ms, [3] count attempt 0|1
# Returns the attempts so far.
DELAY = (
    _NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
if ARGV[3] == '1' then return redis.call('HINCRBY', KEYS[3], ARGV[1], 1) end
return tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
"""
)

# After the first pass: give every failed item one more try (the second pass).
# KEYS[1] batch hash, [2] state, [3] delayed, [4] attempts, [5] leases
# Returns the number of items re-queued, or -1 if this is not the end of pass 1.
SECOND_PASS = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'done', 'failed', 'total', 'pass')
if h[4] ~= '1' or tonumber(h[1]) + tonumber(h[2]) < tonumber(h[3]) then return -1 end
if redis.call('ZCARD', KEYS[5]) > 0 or redis.call('ZCARD', KEYS[3]) > 0 then return -1 end
redis.call('HSET', KEYS[1], 'pass', '2')
local n = 0
local state = redis.call('HGETALL', KEYS[2])
for i = 1, #state, 2 do
  if state[i + 1] == 'failed' then
    redis.call('HDEL', KEYS[2], state[i])
    redis.call('HSET', KEYS[4], state[i], 0)
    redis.call('ZADD', KEYS[3], now, state[i])
    n = n + 1
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[1], 'failed', -n) end
return n
"""
)

# Mark the batch finished, once. KEYS[1] batch hash. Returns 1 for the caller that did it.
FINISH = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'done', 'failed', 'total', 'status')
if h[4] == 'finished' or tonumber(h[1]) + tonumber(h[2]) < tonumber(h[3]) then return 0 end
redis.call('HSET', KEYS[1], 'status', 'finished', 'finished', now, 'updated', now)
return 1
"""
)

# Store a new batch, all of it or nothing, unless its hash exists (a second submitter of the
# same id, or a retried request, writes nothing).
# KEYS[1] batch hash, [2] items, [3] keys, [4] order, [5] positions
# ARGV[1] ttl s, [2] JSON object of the hash's fields, [3] n items, [4] '1' if claim order
# follows, [5] '1' if request positions follow; then n item JSONs, n idempotency keys, and
# as flagged n indexes in claim order and n JSON lists of request positions
# Returns 1 if stored, 0 if the batch existed.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[3])
local args = {}
for k, v in pairs(cjson.decode(ARGV[2])) do
  args[#args + 1] = k
  args[#args + 1] = tostring(v)
end
redis.call('HSET', KEYS[1], unpack(args))
local function fill(key, first)
  for start = 0, n - 1, 500 do
    local pairs_ = {}
    for i = start, math.min(start + 499, n - 1) do
      pairs_[#pairs_ + 1] = i
      pairs_[#pairs_ + 1] = ARGV[first + i]
    end
    redis.call('HSET', key, unpack(pairs_))
  end
end
-- KEYS[i] is filled when ARGV[i] is '1' (order, positions); items and keys always are
local at = 6
for i = 2, 5 do
  if i < 4 or ARGV[i] == '1' then
    fill(KEYS[i], at)
    at = at + n
  end
end
for i = 1, 5 do redis.call('EXPIRE', KEYS[i], ttl) end
return 1
"""
