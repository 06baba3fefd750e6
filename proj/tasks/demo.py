"""Small tasks for the demo, the benchmarks and the tests of routing and delivery."""

from __future__ import annotations

import time
from typing import Any

from proj.app import app


@app.task(name="proj.ping")
def ping() -> str:
    """Round trip through broker, worker and result backend."""
    return "pong"


def _work(task: Any, duration_s: float) -> dict[str, Any]:
    started = time.time()
    wait = task.queue_wait_s()
    if duration_s > 0:
        time.sleep(duration_s)
    return {
        "queue": (task.request.delivery_info or {}).get("routing_key"),
        "started_at": started,
        "queue_wait_s": wait,
        "hostname": task.request.hostname,
    }


@app.task(name="proj.work", bind=True, track_started=True)
def work(self: Any, duration_s: float = 0.0) -> dict[str, Any]:
    """Sleep ``duration_s`` (a stand-in for an I/O call) and report when the task started."""
    return _work(self, duration_s)


@app.task(name="proj.urgent_work", bind=True, urgent=True, track_started=True)
def urgent_work(self: Any, duration_s: float = 0.0) -> dict[str, Any]:
    """Same as :func:`work`, declared urgent: the router sends it to the urgent queue."""
    return _work(self, duration_s)
