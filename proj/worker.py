"""Worker extensions: the ``--adaptive`` option, the bootstep that runs the controller, and the
``proj_resize`` remote-control command.

``celery -A proj control proj_resize 20 -d NODE`` sets a prefork worker's pool to 20 processes
through :mod:`proj.adaptive.poolsize`. Unlike Celery's ``pool_shrink``, it shrinks a worker
that has a backlog, and never ends a process a job was given to. On an adaptive worker it
sets the controller's size, within its bounds, and the controller goes on from there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import click
import redis
from celery import bootsteps
from celery.exceptions import ImproperlyConfigured
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.control import control_command
from vine import promise

from proj import poison, transport
from proj.adaptive.controller import Controller
from proj.adaptive.poolsize import PoolResizer
from proj.guard import outcomes
from proj.mover import BreakerStates, Mover, publisher
from proj.offpeak import ActiveHours
from proj.parking import Parking
from proj.poison import Problem
from proj.presence import Presence
from proj.quarantine import Quarantine
from proj.quarantine_messages import entry_of, examine
from proj.settings import get_settings
from proj.timer_heap import TimerCompaction

logger = logging.getLogger("proj.quarantine")


class DependencyCheck(bootsteps.Step):
    """Refuse to start a worker whose declared dependencies lack a base URL or a key: every
    task calling them would fail. One line names what is missing."""

    label = "proj dependency check"

    def __init__(self, w: Any, **kwargs: Any) -> None:
        problems = get_settings().dependency_problems()
        if problems:
            # SystemExit with a message: one line on stderr and exit status 1, no traceback.
            raise SystemExit(
                "error: "
                + "; ".join(problems)
                + ' (or switch one off: PROJ_DEPENDENCIES=\'{"NAME": {"enabled": false}}\')'
            )


class AdaptiveConcurrency(bootsteps.StartStopStep):
    """Gives a prefork worker its pool resizer (for ``proj_resize``) and, with ``--adaptive``,
    runs the adaptive controller every PROJ_ADAPTIVE_TICK_S on the worker's event loop (prefork
    with a Redis broker; pools without an event loop are not supported)."""

    label = "proj adaptive concurrency"
    requires = ("celery.worker.components:Pool",)

    def __init__(
        self,
        w: Any,
        adaptive: bool = False,
        adaptive_min: int | None = None,
        adaptive_max: int | None = None,
        **kwargs: Any,
    ) -> None:
        settings = get_settings()
        self.adaptive = bool(adaptive) or settings.adaptive.enabled
        overrides = {
            k: v for k, v in (("minimum", adaptive_min), ("maximum", adaptive_max)) if v is not None
        }
        self.policy = settings.concurrency_policy(**overrides)
        self.tick_s = settings.adaptive.tick_s
        self.redis_url = settings.broker.redis_url
        self.controller: Controller | None = None
        if self.adaptive:
            _check_adaptive_pool(w)  # before any pool exists (solo and threads start at once)
            outcomes.enable()  # before the pool forks: its processes inherit it

    def create(self, w: Any) -> None:
        w.proj_resizer = None
        w.proj_controller = None

    def register_with_event_loop(self, w: Any, hub: Any) -> None:
        if not PoolResizer.supports(w.pool):
            return
        w.proj_resizer = PoolResizer(w, hub)
        if not self.adaptive:
            return
        self.controller = Controller(
            w, self.policy, redis.Redis.from_url(self.redis_url), resizer=w.proj_resizer
        )
        w.proj_controller = self.controller
        hub.call_repeatedly(self.tick_s, self.controller.tick)


class ParkingMover(bootsteps.StartStopStep):
    """Moves due parked tasks (deferred by a breaker, a rate limit or a 429) back to their
    queues every PROJ_PARKING_TICK_S: on the worker's event loop, else on a timer thread."""

    label = "proj parking mover"
    requires = ("celery.worker.components:Timer",)

    def __init__(self, w: Any, **kwargs: Any) -> None:
        self.mover: Mover | None = None
        self.tick_s = get_settings().parking.tick_s

    def _mover(self, w: Any) -> Mover:
        settings = get_settings()
        client = redis.Redis.from_url(settings.broker.redis_url, socket_timeout=5)
        return Mover(
            publisher(w.app),
            Parking(client),
            BreakerStates(client, settings),
            batch=settings.parking.batch,
            lease_s=settings.parking.lease_s,
        )

    def register_with_event_loop(self, w: Any, hub: Any) -> None:
        self.mover = self.mover or self._mover(w)
        hub.call_repeatedly(self.tick_s, self.mover.tick)

    def start(self, w: Any) -> None:
        if w.use_eventloop:
            return  # register_with_event_loop runs it
        self.mover = self._mover(w)
        w.timer.call_repeatedly(self.tick_s, self.mover.tick)


class Consumer(CeleryConsumer):
    """Celery's consumer, sending task events in batches (``worker_consumer``).

    Celery buffers a worker's task events (received, started, succeeded: three per task) but
    flushes the buffer on the next turn of the event loop: with a busy worker, one Redis
    PUBLISH per event, each a round trip of the process that feeds the pool. Here a flush
    waits up to EVENT_FLUSH_S (or until proj.events.BUFFER_LIMIT events wait), so one
    ``task.multi`` message carries many events; Flower and every Celery event receiver read
    those as before. Monitors see events up to EVENT_FLUSH_S later; what is buffered at a warm
    shutdown is sent.
    """

    EVENT_FLUSH_S = 0.1
    _event_flush_at = 0.0

    def on_send_event_buffered(self) -> None:
        now = time.monotonic()
        if self.hub is not None and now >= self._event_flush_at:
            # One timer per EVENT_FLUSH_S; one lost in a consumer restart is replaced.
            self._event_flush_at = now + self.EVENT_FLUSH_S
            self.hub.call_later(self.EVENT_FLUSH_S, self._flush_events)

    def shutdown(self) -> None:
        self._flush_events()
        super().shutdown()

    def register_with_event_loop(self, hub: Any) -> None:
        # Every start of the loop (after each reconnect too): acks made in this thread leave
        # the removal of their unacknowledged record to the next record (proj/transport.py).
        super().register_with_event_loop(hub)
        transport.bind_event_loop(hub)

    # --- poison messages -------------------------------------------------------------------
    # Celery trusts a message's shape: a body that is not [args, kwargs, embed], a timelimit
    # that is not two numbers or a missing id raise in this process, the message comes back,
    # and every worker that takes it dies of it. Each message is examined first (the decoding
    # is cached for Celery); what cannot run goes to the quarantine, raw, and is acknowledged.

    _quarantine: Quarantine | None = None

    def create_task_handler(self, promise: Any = promise) -> Callable[[Any], None]:
        handle = super().create_task_handler(promise)
        tasks = self.app.tasks
        recoverable = (*self.connection_errors, *self.channel_errors)

        def on_task_received(message: Any) -> None:
            problem = examine(message, tasks)
            if problem is None:
                try:
                    handle(message)
                    return
                except recoverable:
                    raise  # the connection's: Celery reconnects and the message comes back
                except Exception as err:
                    problem = Problem(poison.ERROR, poison.cut(f"{type(err).__name__}: {err}"))
            self.quarantine_message(message, problem)

        return on_task_received

    def quarantine_message(self, message: Any, problem: Problem) -> None:
        """Keep the message in the quarantine, then acknowledge it off its queue. Should Redis
        be unreachable, the error propagates: the message stays unacknowledged and comes
        back once the consumer has reconnected."""
        settings = get_settings()
        if self._quarantine is None:
            self._quarantine = Quarantine(
                redis.Redis.from_url(settings.broker.redis_url),
                max_entries=settings.quarantine.max,
                ttl_s=settings.quarantine.ttl_s,
            )
        entry = entry_of(
            message, problem, worker=self.hostname, body_max=settings.quarantine.body_max
        )
        self._quarantine.add(entry)
        message.ack()
        logger.error(
            "quarantined %s from queue %r (task %s, id %s): %s",
            entry["id"],
            entry["queue"],
            poison.shown(entry["task"]),
            poison.shown(entry["task_id"]),
            problem,
        )

    # Celery's own answers to these drop the message (or ack it): they go to the quarantine.
    def on_unknown_message(self, body: Any, message: Any) -> None:
        self.quarantine_message(message, Problem(poison.HEADERS, "not a Celery task message"))

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = message.headers.get("task") if isinstance(message.headers, dict) else None
        self.quarantine_message(
            message,
            Problem(poison.UNKNOWN_TASK, f"task {poison.shown(name)} is not registered"),
        )

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self.quarantine_message(message, Problem(poison.HEADERS, poison.cut(str(exc))))

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        detail = poison.cut(f"{type(exc).__name__}: {exc}")
        self.quarantine_message(message, Problem(poison.CONTENT, detail))


def _check_adaptive_pool(w: Any) -> None:
    """Refuse ``--adaptive`` where it could not act, rather than run a fixed pool silently."""
    from celery.concurrency import ALIASES
    from celery.concurrency.prefork import TaskPool as PreforkPool

    cls = w.pool_cls  # steps are made before any of them creates its part: no pool yet
    if not (isinstance(cls, type) and issubclass(cls, PreforkPool)):
        path = f"{cls.__module__}:{cls.__name__}"
        name = next((alias for alias, p in ALIASES.items() if p == path), path)
        raise ImproperlyConfigured(
            f"--adaptive: needs the prefork pool (-P prefork), this worker runs -P {name}"
        )
    if not w.use_eventloop:
        raise ImproperlyConfigured(
            "--adaptive: needs a worker event loop (a Redis or AMQP broker); "
            "this worker's broker transport has none"
        )
    if getattr(w, "autoscale", None):
        raise ImproperlyConfigured("--adaptive and --autoscale both size the pool: choose one")


@control_command(args=[("n", int)], signature="N")
def proj_resize(state: Any, n: Any = None, **_: Any) -> dict[str, str]:
    """proj: set the pool to N processes (prefork; shrinks without ending a busy process)."""
    worker = state.consumer.controller
    resizer: PoolResizer | None = getattr(worker, "proj_resizer", None)
    if resizer is None:
        return {"error": f"proj_resize needs the prefork pool, this worker runs {worker.pool!r}"}
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return {"error": f"n: must be a whole number >= 1, got {n!r}"}
    if worker.autoscaler:
        return {"error": "proj_resize: this worker runs Celery's --autoscale"}
    controller: Controller | None = getattr(worker, "proj_controller", None)
    if controller is not None:
        low, high = controller.policy.minimum, controller.policy.maximum
        if not low <= n <= high:
            return {"error": f"n: the adaptive bounds are {low}..{high}, got {n}"}
        before = controller.limit
        controller.set_limit(n, "set by proj_resize")
    else:
        before = int(worker.pool.limit or worker.pool.num_processes)
        resizer.resize(n - before)
        worker.pool.limit = n
    return {"ok": f"pool {before} -> {n}"}


def install(app: Any) -> None:
    """Add the worker options and the bootstep to ``app``."""
    app.user_options["worker"].add(
        click.Option(
            ["--adaptive"],
            is_flag=True,
            default=False,
            help="proj: adapt the pool size to the providers' success rate.",
        )
    )
    app.user_options["worker"].add(
        click.Option(
            ["--adaptive-min"], type=int, default=None, help="proj: smallest pool (default 2)."
        )
    )
    app.user_options["worker"].add(
        click.Option(
            ["--adaptive-max"], type=int, default=None, help="proj: largest pool (default 10)."
        )
    )
    app.steps["worker"].add(DependencyCheck)
    app.steps["worker"].add(AdaptiveConcurrency)
    app.steps["worker"].add(ParkingMover)
    app.steps["worker"].add(Presence)
    app.steps["worker"].add(TimerCompaction)
    app.steps["consumer"].add(ActiveHours)
