"""Urgent work never waits behind a bulk backlog (real Redis, real workers)."""

from __future__ import annotations

import time

import pytest
import redis as redis_lib

from proj.tasks.demo import urgent_work, work
from tests.support import WorkerPool

pytestmark = pytest.mark.serial  # measures rates or timings: runs alone (Makefile)

BACKLOG = 500
BULK_TASK_S = 0.2


def _queue_depth(client: redis_lib.Redis, queue: str) -> int:
    # kombu keeps one list per priority step: "bulk" and "bulk\x06\x16<step>".
    keys = [queue.encode()] + [f"{queue}\x06\x16{i}".encode() for i in range(1, 10)]
    return sum(int(client.llen(k)) for k in keys)


def test_urgent_task_starts_within_a_second_behind_bulk_backlog(
    workers: WorkerPool, redis_client: redis_lib.Redis, celery_app: object
) -> None:
    workers.start("urgent", ("urgent",), concurrency=2)
    workers.start("bulk", ("bulk",), concurrency=2)
    backlog = [work.delay(BULK_TASK_S) for _ in range(BACKLOG)]
    time.sleep(0.5)
    assert _queue_depth(redis_client, "bulk") > BACKLOG - 50, "the bulk worker must be busy"

    sent = time.time()
    by_declaration = urgent_work.delay(0.0)
    by_priority = work.apply_async((0.0,), priority=0)
    # The same task forced onto the bulk queue waits behind the backlog, as on one queue.
    single_queue = work.apply_async((0.0,), queue="bulk")

    for result in (by_declaration, by_priority):
        out = result.get(timeout=10)
        assert out["queue"] == "urgent"
        assert out["started_at"] - sent < 1.0, out

    time.sleep(1.5)
    assert not single_queue.ready(), "on the bulk queue it must wait behind the backlog"
    assert _queue_depth(redis_client, "bulk") > BACKLOG / 2
    for r in [*backlog, single_queue]:
        r.revoke()
