"""Prometheus metrics: ``proj metrics --port`` serves them (``docs/metrics.md`` lists each).

Two sources, each with label sets bounded by configuration, never by traffic (no task ids,
item keys or batch ids on anything that lives forever):

- **state**, read from Redis at each scrape (:class:`StateCollector`): queue depths, the
  quarantine and dead letters, deferred tasks per lot, every breaker, every adaptive worker,
  every rate limit's wait, the batches in progress (gauges that go when the batch ends), and
  the calls every process made through the guarded client, with tokens and cost (counters
  the processes add to one Redis hash: :mod:`proj.guard.callstats`);
- **events** from the workers (:class:`proj.metrics_events.TaskEvents`, a thread on Celery's
  event stream, as Flower reads it): tasks that ended per task name and state, their run
  time, and breaker transitions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from proj import figures, keys, status
from proj.figures import WAIT_BUCKETS
from proj.guard import callstats
from proj.metrics_events import BREAKER_STATES, TaskEvents
from proj.resilience import admin
from proj.settings import Settings

__all__ = ["StateCollector", "TaskEvents", "registry"]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class StateCollector(Collector):
    """Gauges of what Redis holds right now, read at each scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        client = status.connect(self.settings)
        try:
            yield from self._queues(client)
            yield from self._breakers()
            yield from self._workers(client)
            yield from self._limits(client)
            yield from self._batches()
            counts = callstats.read(client)
            yield from self._calls(counts)
            yield from self._routes(counts)
        finally:
            client.close()

    def _queues(self, client: redis.Redis) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "proj_queue_depth",
            "Messages waiting: the urgent and bulk queues, the quarantine, the dead letters.",
            labels=["queue"],
        )
        for name, n in status.queues(client, self.settings).items():
            depth.add_metric([name], n)
        yield depth
        parked = GaugeMetricFamily(
            "proj_parked_tasks",
            "Deferred tasks waiting in Redis, per lot (breaker:NAME, limit:NAME).",
            labels=["lot"],
        )
        for lot, n in status.parked(client).items():
            parked.add_metric([lot], n)
        yield parked

    def _breakers(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "proj_breaker_state", "1 for the state each breaker is in.", labels=["breaker", "state"]
        )
        rate = GaugeMetricFamily(
            "proj_breaker_failure_rate", "Failures / calls in the window.", labels=["breaker"]
        )
        calls = GaugeMetricFamily(
            "proj_breaker_calls_in_window", "Calls counted in the window.", labels=["breaker"]
        )
        failures = GaugeMetricFamily(
            "proj_breaker_failures_in_window", "Failures in the window.", labels=["breaker"]
        )
        probes = GaugeMetricFamily(
            "proj_breaker_probes", "Half-open probes let through since it last closed.",
            labels=["breaker"],
        )  # fmt: skip
        for view in admin.views(self.settings):
            snap = view.snapshot
            for s in BREAKER_STATES:
                state.add_metric([snap.name, s], 1.0 if snap.state == s else 0.0)
            rate.add_metric([snap.name], snap.failure_rate)
            calls.add_metric([snap.name], snap.calls)
            failures.add_metric([snap.name], snap.failures)
            probes.add_metric([snap.name], snap.probes_total)
        yield from (state, rate, calls, failures, probes)

    def _workers(self, client: redis.Redis) -> Iterator[Metric]:
        target = GaugeMetricFamily(
            "proj_worker_pool_target",
            "The adaptive controller's pool size for each adaptive worker.",
            labels=["worker"],
        )
        actual = GaugeMetricFamily(
            "proj_worker_pool_processes",
            "Pool processes each adaptive worker has now.",
            labels=["worker"],
        )
        success = GaugeMetricFamily(
            "proj_worker_success_rate",
            "Share of calls that succeeded, as the controller last judged it.",
            labels=["worker"],
        )
        for key in client.scan_iter(match=keys.CONCURRENCY_STATUS_PATTERN, count=500):
            h = {_s(k): _s(v) for k, v in client.hgetall(key).items()}
            node = h.get("node")
            if not node:
                continue
            target.add_metric([node], float(h.get("limit", 0)))
            actual.add_metric([node], float(h.get("processes", 0)))
            if h.get("success_rate"):
                success.add_metric([node], float(h["success_rate"]))
        yield from (target, actual, success)

    def _limits(self, client: redis.Redis) -> Iterator[Metric]:
        wait = GaugeMetricFamily(
            "proj_rate_limit_wait_seconds",
            "How long a call would wait for its slot now, per global rate limit.",
            labels=["limit"],
        )
        for row in status.limits(client, self.settings):
            wait.add_metric([row.name], row.wait_s)
        yield wait

    def _batches(self) -> Iterator[Metric]:
        from proj.batch.progress import list_batches

        items = GaugeMetricFamily(
            "proj_batch_items",
            "Items of each batch in progress, by state (done, failed, pending); a batch's "
            "series go when it ends.",
            labels=["batch", "pipeline", "state"],
        )
        for p in list_batches(limit=50):
            if p.finished is not None:
                continue
            pending = max(0, p.total - p.done - p.failed)
            for state, n in (("done", p.done), ("failed", p.failed), ("pending", pending)):
                items.add_metric([p.batch_id, p.pipeline, state], n)
        yield items

    def _calls(self, counts: dict[tuple[str, ...], float]) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "proj_calls",
            "Calls through the guarded client (proj.http, proj's pipelines), by dependency, "
            "outcome (success, failure, ignored: a 429 or our own 4xx) and pipeline (the batch "
            "pipeline, else the task, that made it).",
            labels=["dependency", "outcome", "pipeline"],
        )
        seconds = CounterMetricFamily(
            "proj_call_seconds",
            "Time spent in those calls, by dependency, outcome and pipeline.",
            labels=["dependency", "outcome", "pipeline"],
        )
        tokens = CounterMetricFamily(
            "proj_tokens",
            "AI tokens, by dependency, model asked for, pipeline and kind (prompt, completion).",
            labels=["dependency", "model", "pipeline", "kind"],
        )
        cost = CounterMetricFamily(
            "proj_cost_usd",
            "What AI calls cost in US dollars (PROJ_MODEL_PRICES), by dependency, model and "
            "pipeline.",
            labels=["dependency", "model", "pipeline"],
        )
        refused = CounterMetricFamily(
            "proj_breaker_refused",
            "Calls a breaker refused (open, or half-open with its probe out), by breaker.",
            labels=["breaker"],
        )
        granted = CounterMetricFamily(
            "proj_rate_limit_grants",
            "Calls a global rate limit let through, by limit.",
            labels=["limit"],
        )
        waited = CounterMetricFamily(
            "proj_rate_limit_waited_seconds",
            "Seconds callers slept for their slots, by limit.",
            labels=["limit"],
        )
        deferred = CounterMetricFamily(
            "proj_rate_limit_deferred",
            "Callers whose slot was further off than they may wait (the task is deferred).",
            labels=["limit"],
        )
        families = {
            "refused": (refused, 2),
            "granted": (granted, 2),
            "waited": (waited, 2),
            "deferred": (deferred, 2),
            "calls": (calls, 4),
            "seconds": (seconds, 4),
            "tokens": (tokens, 5),
            "cost": (cost, 4),
        }
        for parts, value in sorted(counts.items()):
            family, width = families.get(parts[0], (None, 0))
            if family is not None and len(parts) == width:
                family.add_metric(list(parts[1:]), value)
        yield from (calls, seconds, tokens, cost, refused, granted, waited, deferred)

    def _routes(self, counts: dict[tuple[str, ...], float]) -> Iterator[Metric]:
        """Task runs per queue and category (:mod:`proj.taskstats`)."""
        labels = ["queue", "category"]
        runs = CounterMetricFamily(
            "proj_queue_runs",
            "Task runs by the queue they came from, their category (triage's) and how they "
            "ended (succeeded, failed, retried, deferred).",
            labels=[*labels, "outcome"],
        )
        run_s = CounterMetricFamily(
            "proj_queue_run_seconds",
            "Run time of those runs, by queue and category.",
            labels=labels,
        )
        wait = HistogramMetricFamily(
            "proj_queue_wait_seconds",
            "Wait from publish to start of task runs, by queue and category.",
            labels=labels,
        )
        cost = CounterMetricFamily(
            "proj_queue_cost_usd",
            "What the AI calls of those runs cost in US dollars, by queue and category.",
            labels=labels,
        )
        for (queue, category), f in sorted(figures.by_route(counts).items()):
            for outcome, n in sorted(f.runs.items()):
                runs.add_metric([queue, category, outcome], n)
            run_s.add_metric([queue, category], f.run_s)
            cumulative, buckets = 0.0, []
            for bound, n in zip([*map(str, WAIT_BUCKETS), "+Inf"], f.wait_buckets, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            wait.add_metric([queue, category], buckets, f.wait_s)
            cost.add_metric([queue, category], f.cost_usd)
        yield from (runs, run_s, wait, cost)


def registry(settings: Settings, app: Any) -> tuple[CollectorRegistry, TaskEvents]:
    """A registry with proj's state gauges and task counters (the event thread not started)."""
    reg = CollectorRegistry()
    reg.register(StateCollector(settings))
    return reg, TaskEvents(app, reg)
