"""The queue of every message: the rule. Pure.

Celery calls it through ``task_routes`` (:mod:`proj.tasks.router`). Rules, first match wins:

1. an explicit ``queue=`` given to ``apply_async`` (or set on the task) is kept (it must be a
   declared queue: Celery's router refuses any other, :mod:`proj.amqp`);
2. the queue chosen by triage (:mod:`proj.triage`), carried in the ``proj_queue`` header, if
   it is a declared queue;
3. a task declared urgent (``@app.task(urgent=True)``) goes to the urgent queue;
4. a message whose priority is at or above the urgent threshold goes there too; on Redis,
   0 is the most urgent priority, so "at or above" means ``priority <= urgent_priority_max``;
5. everything else goes to the bulk queue.

Priority stays a tie-break inside a queue: the router never rewrites it.
"""

from __future__ import annotations

from dataclasses import dataclass

from proj.settings import Settings


@dataclass(frozen=True)
class RoutingPolicy:
    """What the router needs to know: the default queues, the priority threshold and every
    declared queue."""

    urgent_queue: str = "urgent"
    bulk_queue: str = "bulk"
    urgent_priority_max: int = 2
    declared: frozenset[str] = frozenset({"urgent", "bulk"})

    @classmethod
    def from_settings(cls, settings: Settings) -> RoutingPolicy:
        return cls(
            settings.queues.urgent_queue,
            settings.queues.bulk_queue,
            settings.queues.urgent_priority_max,
            frozenset(settings.queue_config.names),
        )


def decide_queue(
    policy: RoutingPolicy,
    *,
    explicit_queue: str | None = None,
    triage_queue: str | None = None,
    task_urgent: bool = False,
    priority: int | None = None,
) -> str:
    """The queue a message goes to. Pure: no I/O, no Celery."""
    if explicit_queue:
        return explicit_queue
    if triage_queue in policy.declared:
        return triage_queue
    if task_urgent:
        return policy.urgent_queue
    if priority is not None and priority <= policy.urgent_priority_max:
        return policy.urgent_queue
    return policy.bulk_queue
