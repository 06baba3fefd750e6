"""Task events for Prometheus: a thread that follows the workers' Celery event stream (as
Flower reads it) and counts the tasks that ended per task name and state, their run time, and
the breaker transitions the workers announce (``proj-breaker-state``). Part of
:mod:`proj.metrics`."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from proj.resilience import breaker as rules
from proj.resilience.backoff import Backoff
from proj.signals import BREAKER_EVENT

logger = logging.getLogger("proj.metrics")

BREAKER_STATES = (rules.CLOSED, rules.OPEN, rules.HALF_OPEN, rules.FORCED_OPEN)
RUNTIME_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Task events that end a run, and the state label each gives.
ENDED = {
    "task-succeeded": "succeeded",
    "task-failed": "failed",
    "task-retried": "retried",
    "task-rejected": "rejected",
    "task-revoked": "revoked",
}
RECONNECT = Backoff(base_s=0.5, max_s=10.0)


class TaskEvents:
    """Counts the tasks the workers report (Celery's task events) into ``registry``: a
    thread that follows the event stream, reconnecting after a broker outage."""

    def __init__(self, app: Any, registry: CollectorRegistry) -> None:
        self.app = app
        self.ended = Counter(
            "proj_tasks",
            "Task runs that ended, by task name and state (succeeded, failed, retried, ...).",
            ["task", "state"],
            registry=registry,
        )
        self.runtime = Histogram(
            "proj_task_runtime_seconds",
            "Run time of the tasks that succeeded.",
            ["task"],
            buckets=RUNTIME_BUCKETS,
            registry=registry,
        )
        self.transitions = Counter(
            "proj_breaker_transitions",
            "Breaker state changes, by breaker and the state it moved to (from the workers' "
            "proj-breaker-state events).",
            ["breaker", "to"],
            registry=registry,
        )
        self.state = app.events.State(max_tasks_in_memory=10_000)
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, name="proj-metrics-events", daemon=True)

    def start(self) -> TaskEvents:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop following the events; waits up to ``timeout_s`` for the thread to end."""
        self._stop.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == BREAKER_EVENT:
            to = event.get("new_state")
            if event.get("breaker") and to in BREAKER_STATES:
                self.transitions.labels(str(event["breaker"]), str(to)).inc()
            return
        self.state.event(event)
        label = ENDED.get(event.get("type", ""))
        if label is None:
            return
        task = self.state.tasks.get(event.get("uuid"))
        name = (task.name if task is not None else None) or "unknown"
        self.ended.labels(name, label).inc()
        if label == "succeeded" and event.get("runtime") is not None:
            self.runtime.labels(name).observe(float(event["runtime"]))

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                with self.app.connection_for_read() as conn:
                    receiver = self.app.events.Receiver(conn, handlers={"*": self.on_event})
                    receiver.should_stop = self._stop.is_set()
                    receiver.on_iteration = self._listening  # its queue is bound by then
                    self._receiver = receiver
                    receiver.capture(limit=None, timeout=None, wakeup=False)
            except Exception as exc:  # broker gone: wait, reconnect, keep counting
                self.connected.clear()
                if self._stop.is_set():
                    return
                attempt += 1
                logger.warning("metrics: task events interrupted (%s); reconnecting", exc)
                time.sleep(RECONNECT.delay(attempt))
            else:
                attempt = 0

    def _listening(self) -> None:
        self.connected.set()
