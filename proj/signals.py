"""Celery signal handlers proj installs on every process that loads the app."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals

SENT_AT_HEADER = "proj_sent_at"


def stamp_sent_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Record when a message was published, so the worker can measure its queue wait."""
    if headers is not None and SENT_AT_HEADER not in headers:
        headers[SENT_AT_HEADER] = time.time()


def remember_node(sender: Any = None, **_: Any) -> None:
    """In a pool process: which worker node this is (for outcome reporting)."""
    from proj.resilience import outcomes

    outcomes.set_node(str(sender) if sender else None)


def start_runtime(**_: Any) -> None:
    """In a new pool process: create and warm its provider runtime before it takes a task."""
    from proj.provider import runtime

    runtime.get_runtime().warm_up()


def stop_runtime(**_: Any) -> None:
    """In an exiting pool process: flush pending breaker and outcome counts, close pools."""
    from proj.provider import runtime

    try:
        runtime.reset_runtime()
    except Exception as exc:
        logging.getLogger("proj.runtime").warning("runtime close failed: %s", exc)


def connect() -> None:
    signals.before_task_publish.connect(stamp_sent_at, weak=False, dispatch_uid="proj.sent_at")
    signals.worker_process_init.connect(remember_node, weak=False, dispatch_uid="proj.node")
    signals.worker_process_init.connect(start_runtime, weak=False, dispatch_uid="proj.runtime")
    signals.worker_process_shutdown.connect(
        stop_runtime, weak=False, dispatch_uid="proj.runtime_stop"
    )
