"""Entries kept for an operator: a hash (entry id -> JSON) and a time index (zset: id -> time).

Dead letters (:mod:`proj.batch.dlq`) and quarantined messages (:mod:`proj.quarantine`) are
both kept this way: listed oldest first, shown, taken atomically for a replay (each entry by
exactly one of two concurrent replays), put back when a replay cannot submit them, dropped.
A store's two keys share a hash tag (:mod:`proj.keys`), so each step is one transaction or
script on Redis Cluster too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis

from proj.resilience.lua import LuaScript, text

# Take entries out of the store, each by exactly one caller.
# KEYS[1] the entries hash, KEYS[2] the index zset; ARGV the entry ids
# Returns the JSON of every entry this call removed (ids already taken are skipped)
_TAKE = LuaScript(
    """
local out = {}
for _, id in ipairs(ARGV) do
  local v = redis.call('HGET', KEYS[1], id)
  if v then
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    table.insert(out, v)
  end
end
return out
"""
)


class Entries:
    """Synchronous access to one store of entries (each a JSON object with ``id`` and ``at``)."""

    def __init__(self, client: redis.Redis, entries_key: str, index_key: str) -> None:
        self.r = client
        self.entries_key = entries_key
        self.index_key = index_key

    def put(self, entries: Sequence[dict[str, Any]]) -> None:
        """Store entries (each with ``id`` and ``at``), replacing any with the same id."""
        if not entries:
            return
        pipe = self.r.pipeline(transaction=True)
        for e in entries:
            pipe.hset(self.entries_key, e["id"], json.dumps(e))
            pipe.zadd(self.index_key, {e["id"]: e.get("at", time.time())})
        pipe.execute()

    def oldest(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Up to ``limit`` entries, oldest first."""
        ids: list[bytes] = self.r.zrange(self.index_key, 0, limit - 1)  # type: ignore[assignment]
        if not ids:
            return []
        raw = self.r.hmget(self.entries_key, ids)
        return [json.loads(v) for v in raw if v is not None]

    def get(self, entry_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.entries_key, entry_id)
        return None if raw is None else json.loads(raw)

    def count(self) -> int:
        return int(self.r.zcard(self.index_key))

    def take(self, entry_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Remove these entries and return the ones this call removed: of two concurrent
        replays, each entry goes to exactly one."""
        if not entry_ids:
            return []
        raw = _TAKE.run(self.r, [self.entries_key, self.index_key], list(entry_ids))
        return [json.loads(text(v)) for v in raw]

    def restore(self, entries: Sequence[dict[str, Any]]) -> None:
        """Put taken entries back, as they were (a replay that could not submit them)."""
        self.put(entries)

    def remove(self, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(self.entries_key, *entry_ids)
        pipe.zrem(self.index_key, *entry_ids)
        removed, _ = pipe.execute()
        return int(removed)
