"""The worker's main process freezes the GC across billiard's forks (no servers).

billiard runs a full ``gc.collect()`` before each fork; with the main process's objects frozen
it has nothing to walk, which is what made growing a pool by 40 processes stall the worker for
seconds. The parent thaws right after the fork; the child keeps the inherited objects frozen.
"""

from __future__ import annotations

import gc
import os

from celery import signals as celery_signals

from proj import app, signals


def test_the_parent_thaws_after_the_fork_and_the_child_keeps_the_freeze() -> None:
    signals.connect(app)  # registers the fork hooks once, however often it is called
    signals.connect(app)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    # what billiard's AsynPool sends just before its gc.collect() and fork
    celery_signals.worker_before_create_process.send(sender=None)
    assert gc.get_freeze_count() > 0
    pid = os.fork()
    if pid == 0:  # the child: still frozen
        os._exit(0 if gc.get_freeze_count() > 0 else 1)
    assert gc.get_freeze_count() == 0
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_fork_proj_did_not_freeze_for_leaves_an_outside_freeze_alone() -> None:
    signals.connect(app)
    gc.freeze()  # someone else's (an app server freezing before its own forks)
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_pool_processes_inherit_the_tls_context_the_main_process_made() -> None:
    """Loading the CA bundle costs a new pool process ~25 ms of CPU; made once in the worker's
    main process (on ``worker_init``, before the pool forks), every child uses that one."""
    from proj.provider.transport import make_http_client, shared_ssl_context

    signals.connect(app)
    shared_ssl_context.cache_clear()
    celery_signals.worker_init.send(sender=None)
    made = shared_ssl_context.cache_info().currsize
    ctx = shared_ssl_context()
    pid = os.fork()
    if pid == 0:  # a pool process: its HTTP client uses the inherited context
        client = make_http_client(max_connections=1, connect_timeout_s=1)
        os._exit(0 if client._transport.ssl_context is ctx else 1)  # type: ignore[attr-defined]
    _, status = os.waitpid(pid, 0)
    assert made == 1
    assert os.waitstatus_to_exitcode(status) == 0


def test_connect_installs_one_breaker_event_listener_however_often_it_is_called() -> None:
    from proj.guard.breaker_listeners import global_listeners

    signals.connect(app)
    signals.connect(app)
    mine = [x for x in global_listeners if isinstance(x, signals.BreakerEventListener)]
    assert len(mine) == 1
