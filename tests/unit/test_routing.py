"""The triage router: one test per rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kombu import Queue

from proj.routing import RoutingPolicy, decide_queue
from proj.tasks.router import route_task

POLICY = RoutingPolicy(urgent_queue="urgent", bulk_queue="bulk", urgent_priority_max=2)


def test_routing_explicit_queue_wins_over_everything() -> None:
    assert decide_queue(POLICY, explicit_queue="bulk", task_urgent=True, priority=0) == "bulk"
    assert decide_queue(POLICY, explicit_queue="urgent", priority=9) == "urgent"


def test_routing_urgent_task_goes_to_urgent() -> None:
    assert decide_queue(POLICY, task_urgent=True) == "urgent"
    assert decide_queue(POLICY, task_urgent=True, priority=9) == "urgent"


@pytest.mark.parametrize(
    ("priority", "queue"),
    [(0, "urgent"), (1, "urgent"), (2, "urgent"), (3, "bulk"), (5, "bulk"), (9, "bulk")],
)
def test_routing_priority_at_or_above_threshold_goes_to_urgent(priority: int, queue: str) -> None:
    assert decide_queue(POLICY, priority=priority) == queue


def test_routing_default_is_bulk() -> None:
    assert decide_queue(POLICY) == "bulk"
    assert decide_queue(POLICY, priority=None, explicit_queue=None) == "bulk"


def test_routing_threshold_is_configurable() -> None:
    strict = RoutingPolicy(urgent_priority_max=0)
    assert decide_queue(strict, priority=1) == "bulk"
    assert decide_queue(strict, priority=0) == "urgent"


def test_router_callable_reads_celery_options() -> None:
    plain = SimpleNamespace(urgent=False)
    urgent = SimpleNamespace(urgent=True)
    assert route_task("t", (), {}, {}, task=plain) == {"queue": "bulk"}
    assert route_task("t", (), {}, {"queue": None}, task=urgent) == {"queue": "urgent"}
    assert route_task("t", (), {}, {"priority": 1}, task=plain) == {"queue": "urgent"}
    assert route_task("t", (), {}, {"queue": Queue("bulk")}, task=urgent) == {"queue": "bulk"}


def test_router_looks_up_task_by_name_when_sent_by_name() -> None:
    import proj.tasks.demo  # noqa: F401  registers the tasks

    assert route_task("proj.urgent_work", (), {}, {}) == {"queue": "urgent"}
    assert route_task("proj.work", (), {}, {}) == {"queue": "bulk"}
    assert route_task("not.registered", (), {}, {}) == {"queue": "bulk"}


def test_router_is_installed_in_celery() -> None:
    from proj import app
    from proj.tasks.demo import urgent_work, work

    router = app.amqp.router
    assert router.route({}, "proj.work", (), {}, work)["queue"].name == "bulk"
    assert router.route({}, "proj.urgent_work", (), {}, urgent_work)["queue"].name == "urgent"
    assert router.route({"priority": 0}, "proj.work", (), {}, work)["queue"].name == "urgent"
    routed = router.route({"queue": "bulk"}, "proj.urgent_work", (), {}, urgent_work)
    assert routed["queue"].name == "bulk"


def test_routing_follows_triage_to_any_declared_queue_and_ignores_others() -> None:
    policy = RoutingPolicy(declared=frozenset({"urgent", "bulk", "legal"}))
    assert decide_queue(policy, triage_queue="legal") == "legal"
    assert decide_queue(policy, triage_queue="nowhere") == "bulk"
