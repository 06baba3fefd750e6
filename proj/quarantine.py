"""The quarantine: task messages a worker could not run, kept raw for an operator.

A worker that reads a message it cannot decode or validate (:mod:`proj.poison` names the
problem) stores it here with its queue and the reason, acknowledges it off its queue, logs
one line and goes on serving the rest. ``proj quarantine list|show|replay|drop`` works on
what is kept. Reading a message off the broker and publishing it again is the worker
layer's (:mod:`proj.quarantine_messages`).

``proj:{quarantine}`` (hash: entry id -> JSON) and ``proj:{quarantine}:index`` (zset: entry
id -> time) keep at most PROJ_QUARANTINE_MAX entries for PROJ_QUARANTINE_TTL_S;
``proj:{quarantine}:counts`` counts messages by kind of problem. One hash tag: the step that
adds an entry and keeps the bounds is one script on Redis Cluster too.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from typing import Any

import redis

from proj import keys
from proj.entries import Entries
from proj.resilience.lua import LuaScript

logger = logging.getLogger("proj.quarantine")

# Add one entry, then keep the store within its bounds (age, then count).
# KEYS[1] entries hash, KEYS[2] index zset, KEYS[3] counts hash
# ARGV[1] id, ARGV[2] JSON, ARGV[3] now (s), ARGV[4] max entries, ARGV[5] TTL (s), ARGV[6] kind
_ADD = LuaScript(
    """
local now, max, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local excess = redis.call('ZCARD', KEYS[2]) - max
if excess > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1)) do
    redis.call('HDEL', KEYS[1], id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
return excess
"""
)


def body_of(entry: Mapping[str, Any]) -> bytes:
    return base64.b64decode(entry["body"])


class Quarantine(Entries):
    """The quarantine store (synchronous: the worker's consumer and the CLI)."""

    def __init__(self, client: redis.Redis, *, max_entries: int, ttl_s: int) -> None:
        super().__init__(client, keys.QUARANTINE, keys.QUARANTINE_INDEX)
        self.max_entries = max_entries
        self.ttl_s = ttl_s

    def add(self, entry: Mapping[str, Any]) -> None:
        _ADD.run(
            self.r,
            [keys.QUARANTINE, keys.QUARANTINE_INDEX, keys.QUARANTINE_COUNTS],
            [
                entry["id"],
                json.dumps(entry, default=str),
                entry["at"],
                self.max_entries,
                self.ttl_s,
                entry["kind"],
            ],
        )

    def counts(self) -> dict[str, int]:
        raw: Mapping[Any, Any] = self.r.hgetall(keys.QUARANTINE_COUNTS)
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}
