"""Off-peak queues: a ``low`` queue with active hours (config/queues.toml, PROJ_QUEUES) is
consumed only inside them. A consumer bootstep of every worker cancels its consumer of such a
queue when the window closes and adds it again when it opens; its messages wait in the queue
meanwhile. ``proj status`` shows the queue paused, with the next start (the worker's presence
hash carries it: :mod:`proj.presence`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import bootsteps

from proj.queues import Queue
from proj.settings import get_settings

logger = logging.getLogger("proj.queues")

#: The longest a worker goes without looking at the clock; it also looks when a window of one
#: of its queues opens or closes, so a pause or a resume is on time.
CHECK_S = 15.0


def plan(queues: list[Queue], paused: set[str], now: datetime) -> tuple[list[str], list[str]]:
    """Which of a worker's queues with active hours to pause and which to resume now. Pure."""
    pause = [q.name for q in queues if not q.active(now) and q.name not in paused]
    resume = [q.name for q in queues if q.active(now) and q.name in paused]
    return pause, resume


class ActiveHours(bootsteps.StartStopStep):
    """Pauses and resumes this worker's queues with active hours."""

    label = "proj active hours"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.queues: list[Queue] | None = None
        self.paused: dict[str, str] = {}  # queue -> when it starts again (ISO, UTC)
        self.timer_entry: Any = None

    def start(self, c: Any) -> None:
        if self.queues is None:  # the queues this worker was started on, once
            declared = get_settings().queue_config.queues
            consumed = set(c.app.amqp.queues.consume_from or {})
            self.queues = [declared[n] for n in sorted(consumed) if n in declared]
            self.queues = [q for q in self.queues if q.hours is not None]
        c.controller.proj_paused = self.paused  # what the presence hash shows
        if not self.queues:
            return
        if self.timer_entry is None:
            self._tick(c)

    def _tick(self, c: Any) -> None:
        now = datetime.now(UTC)
        try:
            self.check(c, now)
        except Exception:  # the broker away: look again at the next tick
            logger.exception("active hours: could not pause or resume a queue")
        changes = [q.hours.next_change(now) for q in self.queues or [] if q.hours is not None]
        delay = min([CHECK_S, *((at - now).total_seconds() + 0.05 for at in changes)])
        self.timer_entry = c.timer.call_after(max(0.05, delay), self._tick, (c,))

    def check(self, c: Any, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        pause, resume = plan(self.queues or [], set(self.paused), now)
        for name in pause:
            queue = next(q for q in self.queues or [] if q.name == name)
            assert queue.hours is not None
            starts = queue.hours.next_change(now)
            logger.info(
                "queue %s: outside its hours (%s), paused until %s", name, queue.hours, starts
            )
            c.cancel_task_queue(name)
            self.paused[name] = starts.isoformat(timespec="minutes")
        for name in resume:
            logger.info("queue %s: inside its hours, consuming again", name)
            c.add_task_queue(name)
            self.paused.pop(name, None)
        # After a consumer restart Celery consumes what is selected; paused queues are not.

    def stop(self, c: Any) -> None:
        pass

    def shutdown(self, c: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None
