"""The batch watchdog: every worker looks for batches whose runners all died and starts them
again, so a batch heals without ``proj batch resume``.

Every PROJ_BATCH_WATCHDOG_INTERVAL_S, on the worker's timer (the event loop of its main
process), it reads the batches whose runner leases the index says have lapsed
(:mod:`proj.batch.lease`) and tries to adopt each. Adopting is one Lua step on the batch's
keys, which decides from the batch itself, so of all the workers that try, one wins; the
winner releases the batch's item leases and sends the batch's runners. A runner killed with
its worker (SIGKILL, OOM), one that lost Redis, or a hand-over message lost in an outage is
noticed a lease after its last renewal (PROJ_BATCH_RUNNER_LEASE_S).

Installed by ``proj.app`` as a worker bootstep (``app.steps["worker"]``).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import bootsteps

from proj.batch.lease import RunnerLeases
from proj.settings import Settings, get_settings

logger = logging.getLogger("proj.batch")

#: Sending the adopted batch's runners tries briefly: if the broker is down, the adoption's
#: grace lapses and a later check (on any worker) adopts the batch again.
DISPATCH_RETRY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.2}


class Watchdog:
    """One worker's check for batches whose runners died."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.leases = RunnerLeases(settings.batch.runner_lease_s, settings.batch.ttl_s)
        self.unreachable = False

    def tick(self) -> None:
        try:
            self.check()
        except redis.RedisError as exc:  # the consumer reconnects; say it once per outage
            if not self.unreachable:
                logger.warning("batch watchdog: Redis unreachable (%s)", exc)
            self.unreachable = True
            return
        except Exception:
            logger.exception("batch watchdog: check failed")
        self.unreachable = False

    def check(self) -> list[str]:
        """Adopt and restart the batches whose runners died; returns their ids."""
        from proj.batch.submit import dispatch

        restarted = []
        for batch_id in self.leases.orphans(self.client):
            adopted = self.leases.adopt(self.client, batch_id)
            if adopted is None:  # another worker got it, a runner renewed, or it finished
                continue
            runners, urgent, times = adopted
            logger.warning(
                "batch %s: its runners' leases lapsed; sending %d runner(s) (restart %d in a row)",
                batch_id,
                runners,
                times,
            )
            try:
                dispatch(
                    batch_id,
                    runners,
                    urgent=urgent,
                    settings=self.settings,
                    retry_policy=DISPATCH_RETRY,
                )
            except Exception as exc:  # the broker down, the queue full: the grace lapses, and
                logger.warning(  # a later check (on any worker) adopts the batch again
                    "batch %s: runners not sent (%s); tried again after its grace", batch_id, exc
                )
                continue
            restarted.append(batch_id)
        return restarted


class BatchWatchdog(bootsteps.StartStopStep):
    """Runs :class:`Watchdog` on the worker's timer (off with
    PROJ_BATCH_WATCHDOG_INTERVAL_S=0)."""

    label = "proj batch watchdog"
    requires = ("celery.worker.components:Timer",)

    def __init__(self, w: Any, **kwargs: Any) -> None:
        self.settings = get_settings()
        self.watchdog: Watchdog | None = None
        self.entry: Any = None

    def start(self, w: Any) -> None:
        interval_s = self.settings.batch.watchdog_interval_s
        if interval_s <= 0:
            return
        # Short socket timeouts: the check runs on the worker's own loop and must not hold it.
        client = redis.Redis.from_url(
            self.settings.broker.redis_url, socket_timeout=2, socket_connect_timeout=1
        )
        self.watchdog = Watchdog(client, self.settings)
        self.entry = w.timer.call_repeatedly(interval_s, self.watchdog.tick)

    def stop(self, w: Any) -> None:
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None
        if self.watchdog is not None:
            self.watchdog.client.close()
            self.watchdog = None
