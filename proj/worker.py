"""Worker extensions: the ``--adaptive`` option and the bootstep that runs the controller."""

from __future__ import annotations

from typing import Any

import click
import redis
from celery import bootsteps

from proj.resilience import outcomes
from proj.resilience.controller import Controller
from proj.settings import get_settings


class AdaptiveConcurrency(bootsteps.StartStopStep):
    """Runs the adaptive controller every PROJ_ADAPTIVE_TICK_S on the worker's event loop
    (prefork with a Redis broker; pools without an event loop are not supported)."""

    label = "proj adaptive concurrency"
    conditional = True
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
        self.enabled = bool(adaptive) or settings.adaptive_enabled
        overrides = {
            k: v for k, v in (("minimum", adaptive_min), ("maximum", adaptive_max)) if v is not None
        }
        self.policy = settings.concurrency_policy(**overrides)
        self.tick_s = settings.adaptive_tick_s
        self.redis_url = settings.redis_url
        self.controller: Controller | None = None
        if self.enabled:
            outcomes.enable()  # before the pool forks: its processes inherit it

    def register_with_event_loop(self, w: Any, hub: Any) -> None:
        self.controller = Controller(w, self.policy, redis.Redis.from_url(self.redis_url))
        hub.call_repeatedly(self.tick_s, self.controller.tick)


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
