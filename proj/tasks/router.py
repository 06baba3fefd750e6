"""The Celery router (``task_routes``): reads a message's options and applies
:func:`proj.routing.decide_queue`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proj.routing import RoutingPolicy, decide_queue
from proj.settings import get_settings
from proj.triage import QUEUE_HEADER


def _queue_name(queue: object) -> str | None:
    if queue is None or queue == "":
        return None
    name = getattr(queue, "name", queue)
    return str(name)


def route_task(
    name: str,
    args: Any,
    kwargs: Any,
    options: Mapping[str, Any],
    task: Any = None,
    **_: Any,
) -> dict[str, str]:
    """Celery router callable: ``(name, args, kwargs, options, task=None) -> {"queue": ...}``."""
    if task is None:
        from celery import current_app

        task = current_app.tasks.get(name)
    return {
        "queue": decide_queue(
            get_settings().derived("routing", RoutingPolicy.from_settings),
            explicit_queue=_queue_name(options.get("queue")),
            triage_queue=(options.get("headers") or {}).get(QUEUE_HEADER),
            task_urgent=bool(getattr(task, "urgent", False)),
            priority=options.get("priority"),
        )
    }
