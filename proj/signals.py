"""Celery signal handlers proj installs on every process that loads the app."""

from __future__ import annotations

import gc
import logging
import os
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


def prepare_for_fork(**_: Any) -> None:
    """In a worker's main process, before the pool forks: make what every pool process would
    otherwise make for itself at start-up, so they inherit it (see
    :func:`proj.provider.client.shared_ssl_context`)."""
    from proj.provider.client import shared_ssl_context

    shared_ssl_context()


def stop_runtime(**_: Any) -> None:
    """In an exiting pool process: flush pending breaker and outcome counts, close pools."""
    from proj.provider import runtime

    try:
        runtime.reset_runtime()
    except Exception as exc:
        logging.getLogger("proj.runtime").warning("runtime close failed: %s", exc)


_gc_frozen_for_fork = False


def freeze_gc_for_fork(**_: Any) -> None:
    """In a worker's main process, just before billiard forks a pool process: freeze the
    garbage collector's generations.

    billiard runs a full ``gc.collect()`` before every fork (Celery #2927). It walks every
    object of the main process: about 70 ms here, which with the fork made each new process cost
    the main loop about 150 ms, so growing a pool by 40 stopped all task dispatch for 6-8 s.
    With the objects frozen that collection has nothing to walk, and the fork is what the
    Python docs recommend (``gc.freeze()`` right before ``fork()``, so the child's collector
    leaves the inherited objects and their pages alone). The parent thaws right after the
    fork (:func:`_thaw_gc_after_fork`): nothing stays frozen there, and garbage the freeze
    skipped is collected by the next regular collection.
    """
    global _gc_frozen_for_fork
    if not _gc_frozen_for_fork:
        gc.freeze()
        _gc_frozen_for_fork = True


def _thaw_gc_after_fork() -> None:
    global _gc_frozen_for_fork
    if _gc_frozen_for_fork:
        gc.unfreeze()
        _gc_frozen_for_fork = False


def _forget_gc_freeze_in_child() -> None:
    # The child keeps the inherited objects frozen; it has nothing of its own to thaw.
    global _gc_frozen_for_fork
    _gc_frozen_for_fork = False


_fork_hooks_registered = False


def connect() -> None:
    global _fork_hooks_registered
    if not _fork_hooks_registered:
        os.register_at_fork(
            after_in_parent=_thaw_gc_after_fork, after_in_child=_forget_gc_freeze_in_child
        )
        _fork_hooks_registered = True
    signals.worker_before_create_process.connect(
        freeze_gc_for_fork, weak=False, dispatch_uid="proj.gc_freeze"
    )
    signals.before_task_publish.connect(stamp_sent_at, weak=False, dispatch_uid="proj.sent_at")
    signals.worker_init.connect(prepare_for_fork, weak=False, dispatch_uid="proj.prefork")
    signals.worker_process_init.connect(remember_node, weak=False, dispatch_uid="proj.node")
    signals.worker_process_init.connect(start_runtime, weak=False, dispatch_uid="proj.runtime")
    signals.worker_process_shutdown.connect(
        stop_runtime, weak=False, dispatch_uid="proj.runtime_stop"
    )
