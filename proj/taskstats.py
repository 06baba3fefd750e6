"""Figures of task runs per queue and per category, counted by the worker that ran them.

The task base (:class:`proj.tasks.base.ProjTask`) reports each run that came from a queue: the
queue it came from, the category triage gave it (the ``proj_category`` header), how it ended,
how long it ran and how long it waited from publish to start. The counts go through the same
per-process buffer and Redis hash as call counts (:mod:`proj.guard.callstats`), and so does the
cost of the AI calls a run makes. ``proj status`` and ``proj metrics`` read them back
(:mod:`proj.figures`).

Labels stay bounded: a queue that is not declared, or a category that neither a triage rule
nor a pipeline names (an item's ``category`` field is user input), is counted as ``other``.
"""

from __future__ import annotations

from contextvars import Token
from typing import Any

from proj.guard import callstats
from proj.settings import Settings, get_settings
from proj.triage import CATEGORY_HEADER

OTHER = "other"
NONE = "-"


def _labels(settings: Settings) -> tuple[frozenset[str], frozenset[str]]:
    """Declared queues and the categories a rule or a pipeline names."""
    from proj.pipelines import registry

    categories = {p.triage_as for p in registry.pipelines().values()}
    for rule in settings.queue_config.rules:
        named = [rule.category] if isinstance(rule.category, str) else rule.category
        categories.update(c for c in named if c != "*")
    return frozenset(settings.queue_config.names), frozenset(categories)


def route_of(request: Any) -> tuple[str, str] | None:
    """(queue, category) of a run that came from a queue; None for a direct call."""
    if request.called_directly or not request.delivery_info:
        return None
    queues, categories = get_settings().derived("taskstats.labels", _labels)
    queue = str(request.delivery_info.get("routing_key") or "")
    category = request.get(CATEGORY_HEADER) or (request.get("headers") or {}).get(CATEGORY_HEADER)
    return (
        queue if queue in queues else OTHER,
        NONE if not category else (str(category) if category in categories else OTHER),
    )


def started(route: tuple[str, str] | None) -> Token[tuple[str, str] | None] | None:
    """A run began: the cost of its calls counts for its queue and category."""
    return callstats.ROUTE.set(route) if route is not None else None


def ended(
    route: tuple[str, str] | None,
    token: Token[tuple[str, str] | None] | None,
    outcome: str,
    wait_s: float | None,
    run_s: float,
) -> None:
    if token is not None:
        callstats.ROUTE.reset(token)
    if route is not None:
        callstats.stats().task(route[0], route[1], outcome, wait_s, run_s)
