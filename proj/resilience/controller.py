"""The adaptive controller in a worker's main process: every tick, read the node's call
outcomes, decide (:mod:`proj.resilience.concurrency`), and resize the pool
(:mod:`proj.resilience.poolsize`). While a resize is under way (processes still to fork, or
retired ones still finishing their job) it does not decide again: the outcomes would judge the
old size. The new size is judged on the calls made from the moment it holds.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.worker import state as worker_state

from proj import keys
from proj.resilience.concurrency import ConcurrencyPolicy, ControllerState, decide
from proj.resilience.outcomes import window_counts
from proj.resilience.poolsize import PoolResizer

logger = logging.getLogger("proj.concurrency")

_PRIORITY_SEP = "\x06\x16"


class Controller:
    def __init__(
        self,
        worker: Any,
        policy: ConcurrencyPolicy,
        client: redis.Redis,
        resizer: PoolResizer | None = None,
    ) -> None:
        self.worker = worker
        self.resizer = resizer or PoolResizer(worker)
        self.policy = policy
        self.client = client
        self.node = worker.hostname
        self.limit = int(worker.pool.num_processes)
        self.state = ControllerState(self.limit, slow_start=policy.slow_start)
        self.last_change = time.time()
        self.last_reason = "started"
        self.last_rate: float | None = None

    def _queues(self) -> list[str]:
        consumer = getattr(self.worker, "consumer", None)
        task_consumer = getattr(consumer, "task_consumer", None)
        return [q.name for q in getattr(task_consumer, "queues", [])]

    def _waiting(self, queues: list[str]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for q in queues:
            pipe.llen(q)
            for p in range(1, 10):
                pipe.llen(f"{q}{_PRIORITY_SEP}{p}")
        return int(sum(pipe.execute()))

    def tick(self) -> None:
        try:
            self._tick()
        except Exception:
            logger.exception("adaptive concurrency: tick failed")

    def _tick(self) -> None:
        now = time.time()
        since = max(self.last_change, now - self.policy.window_s)
        ok, failed = window_counts(
            self.client.hgetall(keys.concurrency_window(self.node)), since * 1000
        )
        queues = self._queues()
        waiting = self._waiting(queues)
        self.last_rate = ok / (ok + failed) if ok + failed else None
        in_use = len(worker_state.active_requests)
        if self.resizer.settling():
            self.last_change = now  # so the new size is judged from the moment it holds
            self._publish(queues, waiting, ok + failed)
            return
        d = decide(
            self.policy,
            self.state,
            ok=ok,
            failed=failed,
            waiting=waiting > 0,
            since_change_s=now - self.last_change,
            in_use=in_use,
        )
        self.state = d.state
        if d.changed:
            logger.info("concurrency %d -> %d: %s", self.limit, d.limit, d.reason)
            self._resize(d.limit)
            self.last_change = now
            self.last_reason = d.reason
        self._publish(queues, waiting, ok + failed)

    def set_limit(self, new: int, reason: str) -> None:
        """An operator's size: kept until the outcomes at that size say otherwise."""
        logger.info("concurrency %d -> %d: %s", self.limit, new, reason)
        self._resize(new)
        self.state = ControllerState(new, slow_start=False, last_good=new)
        self.last_change = time.time()
        self.last_reason = reason

    def _resize(self, new: int) -> None:
        delta = new - self.limit
        self.limit = new
        # The pool's size as `celery inspect stats` and Flower report it ("max-concurrency").
        self.worker.pool.limit = new
        self.resizer.resize(delta)

    def _publish(self, queues: list[str], waiting: int, calls: int) -> None:
        key = keys.concurrency_status(self.node)
        fields: dict[str, Any] = {
            "node": self.node,
            "queues": ",".join(queues),
            "limit": self.limit,
            "processes": int(self.worker.pool.num_processes),
            "minimum": self.policy.minimum,
            "maximum": self.policy.maximum,
            "calls": calls,
            "waiting": waiting,
            "success_rate": "" if self.last_rate is None else f"{self.last_rate:.4f}",
            "reason": self.last_reason,
            "updated": f"{time.time():.3f}",
            "slow_start": int(self.state.slow_start),
        }
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
        pipe.expire(key, 60)
        pipe.execute()
