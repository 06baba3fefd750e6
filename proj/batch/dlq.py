"""The dead-letter store: items that failed for good, with their input, error and traceback.

``proj:{dlq}`` (hash: entry id -> JSON) and ``proj:{dlq}:index`` (zset: entry id -> time),
under one hash tag so that taking an entry is one script on Redis Cluster too. An entry's id
is ``<batch>:<index>``, so the same item is dead-lettered once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

from proj import keys
from proj.entries import Entries


def entry(
    batch_id: str, pipeline: str, index: int, item: dict[str, Any] | None, error: dict[str, Any]
) -> dict[str, Any]:
    """The dead letter of a batch item whose last failure the runner recorded as ``error``."""
    return {
        "batch_id": batch_id,
        "pipeline": pipeline,
        "index": index,
        "item": item,
        "error": {"kind": error.get("kind"), "message": error.get("message")},
        "attempts": error.get("attempts"),
        "traceback": error.get("traceback"),
    }


def _stamped(entries: Sequence[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    return [{"id": f"{e['batch_id']}:{e['index']}", "at": now, **e} for e in entries]


class DeadLetters(Entries):
    """Synchronous access (the CLI, the submitter, replays)."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client, keys.DLQ, keys.DLQ_INDEX)

    def add(self, entries: list[dict[str, Any]]) -> None:
        self.put(_stamped(entries, time.time()))

    def entries(self, batch_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        out = self.oldest(limit)
        return [e for e in out if batch_id is None or e["batch_id"] == batch_id]

    def purge(self, batch_id: str | None = None) -> int:
        return self.remove([e["id"] for e in self.entries(batch_id, limit=10**9)])


async def add_async(client: aioredis.Redis, entries: Sequence[dict[str, Any]]) -> None:
    """:meth:`DeadLetters.add` on an asyncio client (the runner, through its batch store)."""
    stamped = _stamped(entries, time.time())
    if not stamped:
        return
    pipe = client.pipeline(transaction=True)
    for e in stamped:  # as Entries.put writes them
        pipe.hset(keys.DLQ, e["id"], json.dumps(e))
        pipe.zadd(keys.DLQ_INDEX, {e["id"]: e["at"]})
    await pipe.execute()
