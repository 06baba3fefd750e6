"""Celery's publishing side with proj's two checks on the queue a message goes to: it must be
declared (config/queues.toml, PROJ_QUEUES_FILE, PROJ_QUEUES), and not full.

Celery's own router already refuses a queue missing from ``task_queues`` (with
``task_create_missing_queues`` off), in words that send users to a setting they should not
change; :class:`DeclaredRouter` says instead which queues are declared and where to declare
one. A queue with a ``max_depth`` refuses a message while that many wait
(:class:`proj.errors.QueueFull`); the depth comes from a cache a background thread refreshes
every half second, so a publish costs no extra round trip (the first one to a capped queue
reads it once). Installed with ``Celery(amqp="proj.amqp:AMQP")``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery.app import routes
from celery.app.amqp import AMQP as CeleryAMQP
from celery.app.amqp import Queues
from celery.exceptions import QueueNotFound

from proj import broker
from proj.errors import QueueFull
from proj.queues import QueueConfig
from proj.settings import get_settings

logger = logging.getLogger("proj.queues")

#: How often the depths of capped queues are read, and the most a cached depth may be behind.
REFRESH_S = 0.5
MAX_AGE_S = 1.0


class QueueNotDeclared(QueueNotFound):
    """A message for a queue that is not declared. A :class:`celery.exceptions.QueueNotFound`,
    so code that handles Celery's still does."""


class Depths:
    """The depth of every capped queue, read by one background thread per process."""

    def __init__(self, config: QueueConfig, broker_url: str) -> None:
        # Everything the thread needs is given here: it never reads the settings itself (a
        # read racing a reset_settings() could cache settings from before the reset).
        self.config = config
        self.closed = False
        self._read = broker.DepthReader(broker_url)
        self.capped = {n: q.max_depth for n, q in config.queues.items() if q.max_depth}
        self._depths: dict[str, int] = {}
        self._read_at = 0.0
        self._lock = threading.Lock()
        self._pid = 0
        self._thread: threading.Thread | None = None

    def check(self, queue: str) -> None:
        """Raise :class:`QueueFull` if ``queue`` has a maximum depth and is at it."""
        cap = self.capped.get(queue)
        if cap is None:
            return
        depth = self.depth(queue)
        if depth >= cap:
            raise QueueFull(
                f"queue {queue!r} is full: {depth} messages waiting, its max_depth is {cap} "
                "(try later, or raise max_depth in PROJ_QUEUES)",
                queue=queue,
                depth=depth,
                max_depth=cap,
            )

    def depth(self, queue: str) -> int:
        self._ensure_thread()
        if time.monotonic() - self._read_at > MAX_AGE_S:
            self._refresh()  # no fresh reading yet (first use, or the thread is behind)
        return self._depths.get(queue, 0)

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="proj-queue-depths", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self.closed:
            time.sleep(REFRESH_S)
            try:
                self._refresh()
            except Exception as exc:  # Redis away: publishes find out on their own
                logger.debug("queue depths not read: %s", exc)
        self._read.close()

    def _refresh(self) -> None:
        self._depths = self._read(self.capped)
        self._read_at = time.monotonic()

    def close(self) -> None:
        self.closed = True


def _queue_name(route: Any) -> str | None:
    if isinstance(route, str):
        return route
    queue = route.get("queue") if isinstance(route, dict) else None
    return None if queue is None else str(getattr(queue, "name", queue))


class DeclaredQueues(Queues):
    """Celery's queue table, which also knows a queue declared after the app was configured
    (settings read later, as a program that sets the environment after ``import proj``)."""

    def __missing__(self, name: str) -> Any:
        settings = get_settings()
        if name in settings.queue_config.queues:
            return self.add(broker.queue_for(name, settings.broker.broker_url))
        raise KeyError(name)


class DeclaredRouter(routes.Router):
    """Celery's router, with proj's words for an undeclared queue and the depth check."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._depths: Depths | None = None

    @property
    def config(self) -> QueueConfig:
        return get_settings().queue_config

    def expand_destination(self, route: Any) -> Any:
        name = _queue_name(route)
        try:
            return super().expand_destination(route)
        except QueueNotFound:
            raise QueueNotDeclared(
                f"no queue named {name!r}; declared: {self.config.known()} (declare it in "
                "PROJ_QUEUES_FILE or PROJ_QUEUES)"
            ) from None

    def route(self, options: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        out = super().route(options, name, *args, **kwargs)
        queue = _queue_name(out)
        if queue is not None:
            self.check_room(queue)
        return out

    def check_room(self, queue: str) -> None:
        """Raise :class:`QueueFull` if ``queue`` is at its maximum depth (a caller about to
        store work that it will then enqueue asks first)."""
        settings = get_settings()
        config = settings.queue_config
        if self._depths is None or self._depths.config is not config:
            if self._depths is not None:
                self._depths.close()
            self._depths = Depths(config, settings.broker.broker_url)
        self._depths.check(queue)


class AMQP(CeleryAMQP):
    queues_cls = DeclaredQueues

    def Router(self, queues: Any = None, create_missing: Any = None) -> DeclaredRouter:
        return DeclaredRouter(
            self.routes,
            queues or self.queues,
            self.app.either("task_create_missing_queues", create_missing),
            app=self.app,
        )
