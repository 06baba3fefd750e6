"""The dead-letter store: items that failed for good, with their input, error and traceback.

``proj:dlq`` (hash: entry id -> JSON) and ``proj:dlq:index`` (zset: entry id -> time). An
entry's id is ``{batch}:{index}``, so the same item is dead-lettered once.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from proj import keys
from proj.entries import Entries


class DeadLetters(Entries):
    """Synchronous access (the CLI, the submitter, and the runner via a thread)."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client, keys.DLQ, keys.DLQ_INDEX)

    def add(self, entries: list[dict[str, Any]]) -> None:
        now = time.time()
        self.put([{"id": f"{e['batch_id']}:{e['index']}", "at": now, **e} for e in entries])

    def entries(self, batch_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        out = self.oldest(limit)
        return [e for e in out if batch_id is None or e["batch_id"] == batch_id]

    def purge(self, batch_id: str | None = None) -> int:
        return self.remove([e["id"] for e in self.entries(batch_id, limit=10**9)])
