"""Every worker says it is alive, in Redis: its node name, the queues it consumes, its pool
size and pid, rewritten every :data:`INTERVAL_S` with a TTL of a few intervals. ``proj
status`` and ``proj top`` read these hashes instead of asking the workers over the broker
(a control broadcast waits out its whole timeout), so they answer at once; a worker that died
drops out when its hash expires. A bootstep of the Celery worker."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import redis
from celery import bootsteps

from proj import keys
from proj.settings import get_settings

logger = logging.getLogger("proj.presence")

INTERVAL_S = 2.0
TTL_S = 10


def describe(w: Any) -> dict[str, str]:
    """What a worker says of itself."""
    pool = getattr(w, "pool", None)
    processes = getattr(pool, "num_processes", None) or getattr(w, "concurrency", 0)
    queues = sorted(getattr(w.app.amqp.queues, "consume_from", None) or {})
    paused = getattr(w, "proj_paused", None) or {}  # proj.offpeak: queue -> next start
    return {
        "node": w.hostname,
        "queues": ",".join(queues),
        "paused": ",".join(f"{q}@{at}" for q, at in sorted(paused.items())),
        "processes": str(int(processes or 0)),
        "pid": str(os.getpid()),
        "updated": f"{time.time():.3f}",
    }


class Presence(bootsteps.StartStopStep):
    """Writes this worker's hash every INTERVAL_S; removes it at a warm shutdown."""

    label = "proj presence"
    requires = ("celery.worker.components:Timer",)

    def __init__(self, w: Any, **kwargs: Any) -> None:
        self.client: redis.Redis | None = None
        self.worker = w

    def _client(self) -> redis.Redis:
        if self.client is None:
            url = get_settings().broker.redis_url
            self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return self.client

    def tick(self) -> None:
        w = self.worker
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.hset(keys.worker(w.hostname), mapping=describe(w))  # type: ignore[arg-type]
            pipe.expire(keys.worker(w.hostname), TTL_S)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:  # Redis away: say it again next tick
            logger.debug("presence: %s", exc)

    def register_with_event_loop(self, w: Any, hub: Any) -> None:
        self.tick()
        hub.call_repeatedly(INTERVAL_S, self.tick)

    def start(self, w: Any) -> None:
        if w.use_eventloop:
            return  # register_with_event_loop runs it
        self.tick()
        w.timer.call_repeatedly(INTERVAL_S, self.tick)

    def stop(self, w: Any) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            self._client().delete(keys.worker(w.hostname))
