"""Waiting for many results at once.

``ResultSet.join_native`` follows results over pub/sub; with tasks that were retried or
deferred (their state goes RETRY, then SUCCESS) it was seen to miss final states. Polling the
backend with MGET is robust and cheap: one round trip per ``interval_s`` for any number of
results.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery.result import AsyncResult

from proj.app import app


def wait_all(
    results: Iterable[AsyncResult], timeout_s: float, interval_s: float = 0.2
) -> dict[str, dict[str, Any]]:
    """Block until every result is ready; returns task id -> result meta (status, result,
    traceback). Raises ``celery.exceptions.TimeoutError`` after ``timeout_s``."""
    ids = [r.id for r in results]
    return {
        task_id: meta
        for task_id, meta in app.backend.get_many(ids, timeout=timeout_s, interval=interval_s)
    }


def states(metas: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many results ended in each state."""
    counts: dict[str, int] = {}
    for meta in metas.values():
        counts[meta["status"]] = counts.get(meta["status"], 0) + 1
    return counts
