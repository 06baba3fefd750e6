"""Celery signal handlers proj installs on every process that loads the app."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from typing import Any

import pybreaker
from celery import signals

from proj.events import flush_sent_events

SENT_AT_HEADER = "proj_sent_at"
#: Loggers held at WARNING in every process: below it they print request URLs.
QUIET_LOGGERS = ("httpx", "httpcore")
BREAKER_EVENT = "proj-breaker-state"


_app: Any = None  # the app that connected these handlers (proj.app), set by connect()


def send_breaker_event(fields: dict[str, object]) -> None:
    """Publish a ``proj-breaker-state`` event on the app's event exchange (Flower sees it)."""
    if _app is None:
        return
    with _app.events.default_dispatcher() as dispatcher:
        dispatcher.send(BREAKER_EVENT, **fields)


class BreakerEventListener(pybreaker.CircuitBreakerListener):
    """Sends every breaker transition this process causes as a Celery event, from a short
    thread: a transition may be found on an event loop or in the flusher thread, and
    publishing blocks."""

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        fields: dict[str, object] = {
            "breaker": cb.name,
            "old_state": getattr(old_state, "name", None),
            "new_state": new_state.name,
            "open_s": cb.reset_timeout,
        }
        threading.Thread(target=_send_quietly, args=(fields,), daemon=True).start()


_BREAKER_EVENTS = BreakerEventListener()


def _send_quietly(fields: dict[str, object]) -> None:
    try:
        send_breaker_event(fields)
    except Exception as exc:  # the broker is down: the log line still says it
        logging.getLogger("proj.breaker").debug("breaker event not sent: %s", exc)


def check_worker_queues(options: dict[str, Any] | None = None, **_: Any) -> None:
    """Before a worker sets up its queues: each one ``-Q`` names must be declared, or the
    worker stops with one line naming the declared queues (Celery's own refusal is a
    traceback that points at a setting to change)."""
    from proj.settings import get_settings

    wanted = (options or {}).get("queues") or []
    if isinstance(wanted, str):
        wanted = wanted.split(",")
    config = get_settings().queue_config
    unknown = [str(q).strip() for q in wanted if str(q).strip() not in config.queues]
    if unknown:
        raise SystemExit(  # one line on stderr, exit status 1, no traceback
            f"error: no queue named {unknown[0]!r}; declared: {config.known()} (declare it in "
            "PROJ_QUEUES_FILE or PROJ_QUEUES)"
        )


def stamp_sent_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Record when a message was published, so the worker can measure its queue wait."""
    if headers is not None and SENT_AT_HEADER not in headers:
        headers[SENT_AT_HEADER] = time.time()


def remember_node(sender: Any = None, **_: Any) -> None:
    """In a pool process: which worker node this is (for outcome reporting)."""
    from proj.guard import outcomes

    outcomes.set_node(str(sender) if sender else None)


def start_runtime(**_: Any) -> None:
    """In a new pool process: create and warm its provider runtime before it takes a task."""
    from proj.provider import runtime

    runtime.get_runtime().warm_up()


def prepare_for_fork(**_: Any) -> None:
    """In a worker's main process, before the pool forks: make what every pool process would
    otherwise make for itself at start-up, so they inherit it (see
    :func:`proj.provider.transport.shared_ssl_context`)."""
    from proj.provider.transport import shared_ssl_context

    shared_ssl_context()


def upgrade_keys(**_: Any) -> None:
    """In a worker's main process, at start: move what an earlier version kept in Redis under
    other names (:mod:`proj.keys_upgrade`); with short timeouts, so a Redis that is down
    costs one log line and a second or two."""
    import redis

    from proj.keys_upgrade import upgrade_quietly
    from proj.settings import get_settings

    url = get_settings().broker.redis_url
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    try:
        upgrade_quietly(client)
    finally:
        client.close()


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


def connect(app: Any) -> None:
    """Install the handlers for ``app`` (once per process)."""
    from proj.guard.breaker import add_global_listener

    global _app
    _app = app
    # httpx logs every request line, query string included, at INFO, and httpcore traces each
    # request at DEBUG: URLs can carry a token (a webhook's), and a line per call is what a
    # busy worker can least afford. Every process proj starts imports this (via proj.app):
    # the CLI, workers, Flower, the simulator.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

    add_global_listener(_BREAKER_EVENTS)  # the same one each call: no event sent twice
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
    signals.worker_init.connect(upgrade_keys, weak=False, dispatch_uid="proj.keys_upgrade")
    signals.celeryd_init.connect(check_worker_queues, weak=False, dispatch_uid="proj.queues")
    signals.worker_process_init.connect(remember_node, weak=False, dispatch_uid="proj.node")
    signals.worker_process_init.connect(start_runtime, weak=False, dispatch_uid="proj.runtime")
    signals.worker_process_shutdown.connect(
        stop_runtime, weak=False, dispatch_uid="proj.runtime_stop"
    )
    # Pool processes leave with os._exit (no atexit): send their buffered task-sent events.
    signals.worker_process_shutdown.connect(
        flush_sent_events, weak=False, dispatch_uid="proj.sent_events"
    )
