"""A batch's state in Redis: its items, who is working on which, results, counters.

Data model (keys in :mod:`proj.keys`; every key expires PROJ_BATCH_TTL_S after the last write)::

    proj:batch:{id}            hash  pipeline, total, next (claim cursor), done, failed, cached,
                                     duplicates, pass (1, then 2 for the retry of failures),
                                     status (running|finished), started, updated, finished,
                                     runners (how many it should have), adopted (restarts by
                                     the watchdog in a row)
    proj:batch:{id}:items      hash  index -> item JSON
    proj:batch:{id}:keys       hash  index -> idempotency key
    proj:batch:{id}:state      hash  index -> done | failed
    proj:batch:{id}:results    hash  index -> result JSON (written once: HSETNX)
    proj:batch:{id}:errors     hash  index -> error JSON of its last failure
    proj:batch:{id}:attempts   hash  index -> attempts so far
    proj:batch:{id}:leases     zset  index -> lease expiry ms (claimed, in flight)
    proj:batch:{id}:delayed    zset  index -> ready ms (deferred or waiting to retry)
    proj:batch:{id}:runners    zset  runner id -> lease expiry ms (:mod:`proj.batch.lease`)

An item is claimed with a lease; a runner that dies leaves leases that expire, or are released
at once when its own lease is seen gone, and any runner (or ``proj batch resume``) claims those
items again. Results are written with HSETNX and the
counters move only on that first write, so an item is counted and stored once however often
it is run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from proj import keys

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Claim up to n items: ready delayed ones first, then new ones, then expired leases.
# KEYS[1] batch hash, [2] leases, [3] delayed, [4] state
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
    for idx = nxt, stop - 1 do take(tostring(idx)) end
  end
end
if #out < n then
  for _, idx in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, n - #out)) do
    take(idx)
  end
end
redis.call('HSET', KEYS[1], 'updated', now)
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3])) end
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


@dataclass(frozen=True)
class Progress:
    """A batch at one moment (what the progress bar and ``proj batches`` show)."""

    batch_id: str
    pipeline: str
    total: int
    done: int
    failed: int
    cached: int
    duplicates: int
    in_flight: int
    deferred: int
    status: str
    started: float
    updated: float
    finished: float | None

    @property
    def finished_ok(self) -> bool:
        return self.status == "finished"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class BatchStore:
    """Async access to batches in Redis (one instance per process and event loop)."""

    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.r = client
        self.ttl_s = ttl_s
        self._claim = client.register_script(CLAIM)
        self._complete = client.register_script(COMPLETE)
        self._delay = client.register_script(DELAY)
        self._second = client.register_script(SECOND_PASS)
        self._finish = client.register_script(FINISH)

    @staticmethod
    def k(batch_id: str, part: str | None = None) -> str:
        return keys.batch(batch_id, part)

    async def create(
        self,
        batch_id: str,
        pipeline: str,
        items: list[dict[str, Any]],
        item_keys: list[str],
        *,
        duplicates: int,
        urgent: bool,
        now: float,
    ) -> bool:
        """Store a new batch. Returns False if a batch with this id already exists."""
        created = await self.r.hsetnx(self.k(batch_id), "pipeline", pipeline)
        if not created:
            return False
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(
            self.k(batch_id),
            mapping={
                "total": len(items),
                "next": 0,
                "done": 0,
                "failed": 0,
                "cached": 0,
                "duplicates": duplicates,
                "pass": 1,
                "status": "running",
                "urgent": int(urgent),
                "started": now,
                "updated": int(now * 1000),
            },
        )
        for start in range(0, len(items), 1000):
            chunk = range(start, min(len(items), start + 1000))
            pipe.hset(self.k(batch_id, "items"), mapping={i: json.dumps(items[i]) for i in chunk})
            pipe.hset(self.k(batch_id, "keys"), mapping={i: item_keys[i] for i in chunk})
        pipe.zadd(keys.BATCHES, {batch_id: now})
        for part in (None, "items", "keys"):
            pipe.expire(self.k(batch_id, part), self.ttl_s)
        await pipe.execute()
        return True

    def _keys(self, batch_id: str, *parts: str | None) -> list[str]:
        return [self.k(batch_id, p) for p in parts]

    async def claim(self, batch_id: str, n: int, lease_s: float) -> list[int]:
        out = await self._claim(
            keys=self._keys(batch_id, None, "leases", "delayed", "state"),
            args=[n, int(lease_s * 1000), self.ttl_s],
        )
        return [int(_s(i)) for i in out]

    async def load(
        self, batch_id: str, indexes: list[int]
    ) -> list[tuple[int, dict[str, Any], str]]:
        """(index, item, idempotency key) of claimed items."""
        if not indexes:
            return []
        items = await self.r.hmget(self.k(batch_id, "items"), indexes)
        ks = await self.r.hmget(self.k(batch_id, "keys"), indexes)
        return [
            (i, json.loads(it), _s(k))
            for i, it, k in zip(indexes, items, ks, strict=True)
            if it is not None
        ]

    async def complete(
        self, batch_id: str, outcomes: Iterable[tuple[int, str, str]]
    ) -> dict[str, str]:
        args: list[Any] = [self.ttl_s]
        for idx, how, payload in outcomes:
            args += [idx, how, payload]
        vals = await self._complete(
            keys=self._keys(batch_id, None, "leases", "state", "results", "errors"), args=args
        )
        return dict(
            zip(("done", "failed", "total", "pass", "status"), (_s(v) for v in vals), strict=True)
        )

    async def delay(self, batch_id: str, idx: int, wait_s: float, *, attempt: bool) -> int:
        return int(
            await self._delay(
                keys=self._keys(batch_id, "leases", "delayed", "attempts"),
                args=[idx, int(wait_s * 1000), "1" if attempt else "0"],
            )
        )

    async def second_pass(self, batch_id: str) -> int:
        return int(
            await self._second(
                keys=self._keys(batch_id, None, "state", "delayed", "attempts", "leases")
            )
        )

    async def finish(self, batch_id: str) -> bool:
        return bool(await self._finish(keys=[self.k(batch_id)]))

    async def expire_leases(self, batch_id: str) -> int:
        """Make every current lease claimable now (``proj batch resume``)."""
        leases: list[bytes] = await self.r.zrange(self.k(batch_id, "leases"), 0, -1)  # type: ignore[assignment]
        if leases:
            await self.r.zadd(self.k(batch_id, "leases"), dict.fromkeys(leases, 0))
        return len(leases)

    async def progress(self, batch_id: str) -> Progress | None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.k(batch_id))
        pipe.zcard(self.k(batch_id, "leases"))
        pipe.zcard(self.k(batch_id, "delayed"))
        raw, leases, delayed = await pipe.execute()
        if not raw:
            return None
        h = {_s(k): _s(v) for k, v in raw.items()}
        return Progress(
            batch_id,
            h.get("pipeline", "?"),
            int(h.get("total", 0)),
            int(h.get("done", 0)),
            int(h.get("failed", 0)),
            int(h.get("cached", 0)),
            int(h.get("duplicates", 0)),
            int(leases),
            int(delayed),
            h.get("status", "?"),
            float(h.get("started", 0)),
            int(h.get("updated", 0)) / 1000,
            float(h["finished"]) / 1000 if h.get("finished") else None,
        )

    async def results(self, batch_id: str) -> dict[int, Any]:
        raw = await self.r.hgetall(self.k(batch_id, "results"))
        return {int(_s(k)): json.loads(v) for k, v in raw.items()}

    async def errors(self, batch_id: str) -> dict[int, Any]:
        raw = await self.r.hgetall(self.k(batch_id, "errors"))
        state = await self.r.hgetall(self.k(batch_id, "state"))
        failed = {_s(k) for k, v in state.items() if _s(v) == "failed"}
        return {int(_s(k)): json.loads(v) for k, v in raw.items() if _s(k) in failed}

    async def item(self, batch_id: str, idx: int) -> dict[str, Any] | None:
        raw = await self.r.hget(self.k(batch_id, "items"), idx)
        return None if raw is None else dict(json.loads(raw))

    async def batch_ids(self, limit: int = 50) -> list[str]:
        return [_s(b) for b in await self.r.zrevrange(keys.BATCHES, 0, limit - 1)]

    async def meta(self, batch_id: str, field: str) -> str | None:
        v = await self.r.hget(self.k(batch_id), field)
        return None if v is None else _s(v)
