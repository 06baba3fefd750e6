"""Worker extensions: the ``--adaptive`` option, the bootstep that runs the controller, and the
``proj_resize`` remote-control command.

``celery -A proj control proj_resize 20 -d NODE`` sets a prefork worker's pool to 20 processes
through :mod:`proj.resilience.poolsize`. Unlike Celery's ``pool_shrink``, it shrinks a worker
that has a backlog, and never ends a process a job was given to. On an adaptive worker it
sets the controller's size, within its bounds, and the controller goes on from there.
"""

from __future__ import annotations

from typing import Any

import click
import redis
from celery import bootsteps
from celery.exceptions import ImproperlyConfigured
from celery.worker.control import control_command

from proj.resilience import outcomes
from proj.resilience.controller import Controller
from proj.resilience.poolsize import PoolResizer
from proj.settings import get_settings


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
        self.adaptive = bool(adaptive) or settings.adaptive_enabled
        overrides = {
            k: v for k, v in (("minimum", adaptive_min), ("maximum", adaptive_max)) if v is not None
        }
        self.policy = settings.concurrency_policy(**overrides)
        self.tick_s = settings.adaptive_tick_s
        self.redis_url = settings.redis_url
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
    app.steps["worker"].add(AdaptiveConcurrency)
