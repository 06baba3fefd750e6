"""The adaptive controller in a worker's main process: every tick, read the node's call
outcomes, decide (:mod:`proj.resilience.concurrency`), and resize the pool
(:mod:`proj.adaptive.poolsize`). While a resize is under way (processes still to fork, or
retired ones still finishing their job) it does not decide again: the outcomes would judge the
old size. The new size is judged on the calls made from the moment it holds. One exception: a
step up that meets 429s while its processes are still being forked is sent back at once (the
rest of the forks are cancelled), so an overshoot never reaches its full size.

A size that held, and the ceiling where 429s began, are remembered per set of queues in Redis;
the next adaptive worker of those queues starts there instead of ramping up from ``-c``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.worker import state as worker_state

from proj import broker, keys
from proj.adaptive.poolsize import PoolResizer
from proj.resilience.concurrency import ConcurrencyPolicy, ControllerState, decide
from proj.resilience.outcomes import window_counts

logger = logging.getLogger("proj.concurrency")


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
        self.last_change = time.time()  # outcomes are judged from here
        self.changed_at = self.last_change  # when the size last changed
        self.last_reason = "started"
        self.last_rate: float | None = None
        self.recalled = False  # the queues' remembered size was looked up
        self.remembered: tuple[int, int] | None = None  # (size, ceiling) last written
        self.remembered_at = 0.0
        self._depths: broker.DepthReader | None = None

    def _queues(self) -> list[str]:
        consumer = getattr(self.worker, "consumer", None)
        task_consumer = getattr(consumer, "task_consumer", None)
        return [q.name for q in getattr(task_consumer, "queues", [])]

    def _waiting(self, queues: list[str]) -> int:
        """Messages waiting in this worker's queues (on either broker: :mod:`proj.broker`)."""
        if self._depths is None:  # on Redis, through the controller's own client
            self._depths = broker.DepthReader(self.worker.app.conf.broker_url, self.client)
        return sum(self._depths(queues).values())

    def tick(self) -> None:
        try:
            self._tick()
        except Exception:
            logger.exception("adaptive concurrency: tick failed")

    def _tick(self) -> None:
        now = time.time()
        queues = self._queues()
        if not self.recalled and queues:
            self.recalled = True
            self._recall(queues)
        raw = self.client.hgetall(keys.concurrency_window(self.node))
        since = max(self.last_change, now - self.policy.window_s)
        ok, failed, overloaded = window_counts(raw, since * 1000)
        waiting = self._waiting(queues)
        self.last_rate = ok / (ok + failed) if ok + failed else None
        in_use = len(worker_state.active_requests)
        if self.resizer.settling():
            # 429s since the step up began, while its processes are still coming up: an
            # overshoot, sent back now rather than once every process has met them.
            _, _, overloaded = window_counts(raw, self.changed_at * 1000)
            if not (self.state.probing and overloaded >= self.policy.overload_min):
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
            overloaded=overloaded,
        )
        self.state = d.state
        if d.changed:
            logger.info("concurrency %d -> %d: %s", self.limit, d.limit, d.reason)
            self._resize(d.limit)
            self.last_change = self.changed_at = now
            self.last_reason = d.reason
        self._remember(queues, now)
        self._publish(queues, waiting, ok + failed)

    def _memory_key(self, queues: list[str]) -> str:
        return keys.concurrency_memory(",".join(sorted(queues)))

    def _recall(self, queues: list[str]) -> None:
        """Start at the size these queues last settled at, if they did."""
        raw = self.client.hgetall(self._memory_key(queues))
        try:
            size, ceiling = int(raw[b"size"]), int(raw.get(b"ceiling", 0))
        except (KeyError, ValueError):
            return
        size = min(self.policy.maximum, max(self.policy.minimum, size))
        self.remembered = (size, ceiling)
        if size == self.limit:
            return
        reason = f"the size these queues settled at last time ({','.join(sorted(queues))})"
        logger.info("concurrency %d -> %d: %s", self.limit, size, reason)
        self._resize(size)
        self.state = ControllerState(size, slow_start=False, last_good=size, ceiling=ceiling)
        self.last_change = self.changed_at = time.time()
        self.last_reason = reason

    def _remember(self, queues: list[str], now: float) -> None:
        """Keep the size that holds now (and the ceiling), at most every 5 s."""
        s = self.state
        if not queues or s.probing or self.last_rate is None:
            return
        if self.last_rate <= self.policy.target_success:
            return
        current = (s.limit, s.ceiling)
        if current == self.remembered or now - self.remembered_at < 5.0:
            return
        key = self._memory_key(queues)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping={"size": s.limit, "ceiling": s.ceiling, "updated": f"{now:.0f}"})
        pipe.expire(key, 7 * 86400)
        pipe.execute()
        self.remembered, self.remembered_at = current, now

    def set_limit(self, new: int, reason: str) -> None:
        """An operator's size: kept until the outcomes at that size say otherwise."""
        logger.info("concurrency %d -> %d: %s", self.limit, new, reason)
        self._resize(new)
        self.state = ControllerState(new, slow_start=False, last_good=new)
        self.last_change = self.changed_at = time.time()
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
            "ceiling": self.state.ceiling,
        }
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
        pipe.expire(key, 60)
        pipe.execute()
