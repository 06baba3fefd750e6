"""The dead-letter store: items that failed for good, with their input, error and traceback.

``proj:dlq`` (hash: entry id -> JSON) and ``proj:dlq:index`` (zset: entry id -> time). An
entry's id is ``{batch}:{index}``, so the same item is dead-lettered once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis

from proj import keys


class DeadLetters:
    """Synchronous access (the CLI, the submitter, and the runner via a thread)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def add(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        pipe = self.r.pipeline(transaction=True)
        now = time.time()
        for e in entries:
            entry_id = f"{e['batch_id']}:{e['index']}"
            pipe.hset(keys.DLQ, entry_id, json.dumps({"id": entry_id, "at": now, **e}))
            pipe.zadd(keys.DLQ_INDEX, {entry_id: now})
        pipe.execute()

    def entries(self, batch_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        ids: list[bytes] = self.r.zrange(keys.DLQ_INDEX, 0, limit - 1)  # type: ignore[assignment]
        if not ids:
            return []
        raw = self.r.hmget(keys.DLQ, ids)
        out = [json.loads(v) for v in raw if v is not None]
        return [e for e in out if batch_id is None or e["batch_id"] == batch_id]

    def remove(self, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(keys.DLQ, *entry_ids)
        pipe.zrem(keys.DLQ_INDEX, *entry_ids)
        removed, _ = pipe.execute()
        return int(removed)

    def purge(self, batch_id: str | None = None) -> int:
        return self.remove([e["id"] for e in self.entries(batch_id, limit=10**9)])
