"""One background thread per process that sends buffered counts to Redis.

Breakers and the adaptive controller's outcome recorder count calls in memory and send them
in batches (every INTERVAL_S), so a guarded call costs no Redis round trip. Whatever buffers
registers an object with a ``flush`` method, and may give it a ``flush_interval_s`` of its own
(figures for ``proj metrics`` can wait a second; a breaker's failures should not); the thread
calls each one once its interval has passed, and :func:`flush_all` does it at once (a process
that is about to exit). The thread is made on
first use and again after a fork (threads do not survive ``fork``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger("proj.guard")

INTERVAL_S = 0.05


class Flushable(Protocol):
    def flush(self) -> None: ...


_lock = threading.Lock()
_members: weakref.WeakSet[Flushable] = weakref.WeakSet()
_flushed_at: weakref.WeakKeyDictionary[Flushable, float] = weakref.WeakKeyDictionary()
_wake = threading.Event()
_thread: threading.Thread | None = None


def _after_fork_in_child() -> None:
    # A lock or event held by another thread at fork time would stay held forever.
    global _lock, _wake, _thread
    _lock, _wake, _thread = threading.Lock(), threading.Event(), None


os.register_at_fork(after_in_child=_after_fork_in_child)


def register(member: Flushable) -> None:
    """Flush ``member`` every interval from now on (held weakly)."""
    with _lock:
        _members.add(member)


def poke() -> None:
    """Something was buffered: it goes out within the interval."""
    if _thread is None:
        _ensure_thread()
    if not _wake.is_set():  # a plain read; set() takes a lock and notifies
        _wake.set()


def flush_all() -> None:
    """Send everything buffered in this process now."""
    with _lock:
        members = list(_members)
    for m in members:
        _flush(m.flush)


def _flush(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # one failing member must not stop the others or the thread
        logger.exception("flushing %r failed", fn)


def _flush_due() -> float | None:
    """Flush the members whose interval has passed since they were last flushed; the seconds
    until the next of the others is due, or None when every one has been flushed."""
    now = time.monotonic()
    with _lock:
        members = list(_members)
    later: float | None = None
    for m in members:
        due = _flushed_at.get(m, 0.0) + getattr(m, "flush_interval_s", INTERVAL_S)
        if due <= now:
            _flushed_at[m] = now
            _flush(m.flush)
        else:
            later = due - now if later is None else min(later, due - now)
    return later


def _run() -> None:
    # Idle until something is buffered, then batch what arrives within one interval (or the
    # member's own, longer one).
    while True:
        _wake.wait()
        _wake.clear()
        time.sleep(INTERVAL_S)
        wait = _flush_due()
        while wait is not None:
            if _wake.wait(wait):
                break  # buffered again meanwhile: a new interval, for the members that are due
            wait = _flush_due()


def _ensure_thread() -> None:
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_run, name="proj-flush", daemon=True)
            _thread.start()
