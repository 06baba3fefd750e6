"""Replay dead letters: their items run again as a new batch (one per pipeline)."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import redis

from proj.batch.dlq import DeadLetters
from proj.batch.submit import BatchHandle, submit
from proj.settings import get_settings


def replay(*, batch_id: str | None = None, entry_ids: list[str] | None = None) -> BatchHandle:
    """Submit the dead-lettered items again and remove them from the store. If they fail
    again, the new batch dead-letters them again. Returns the (last) new batch."""
    client = redis.Redis.from_url(get_settings().broker.redis_url)
    try:
        return _replay(DeadLetters(client), batch_id, entry_ids)
    finally:
        client.close()


def _replay(dlq: DeadLetters, batch_id: str | None, entry_ids: list[str] | None) -> BatchHandle:
    wanted = [
        e["id"]
        for e in dlq.entries(batch_id, limit=10**9)
        if entry_ids is None or e["id"] in entry_ids
    ]
    # Claimed atomically: a concurrent replay of the same dead letters gets none of these.
    entries = dlq.take(wanted)
    if not entries:
        raise ValueError("no dead letters match")
    by_pipeline = defaultdict(list)
    for e in entries:
        by_pipeline[e["pipeline"]].append(e)
    handle: BatchHandle | None = None
    pending = list(by_pipeline.items())
    try:
        while pending:
            pipeline, group = pending[0]
            # A new batch id: the replay must not be answered from the failed batch's records,
            # nor share its id with another replay.
            new_id = f"replay-{int(time.time())}-{uuid.uuid4().hex[:8]}"
            handle = submit(pipeline, [e["item"] for e in group], batch_id=new_id)
            pending.pop(0)
    except BaseException:
        dlq.restore([e for _, group in pending for e in group])  # not submitted: kept
        raise
    assert handle is not None
    return handle
