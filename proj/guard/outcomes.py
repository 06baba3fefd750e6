"""What the adaptive controller hears: the outcome of every guarded call, or of every task
that made none, counted per worker node in Redis (``proj:cc:{node}:win``, 200 ms buckets).

A pool process learns its node name from Celery's ``worker_process_init``; the controller
switches reporting on in the worker's main process before the pool forks. Counts are kept in
memory and sent by the flusher thread every 50 ms, so reporting costs a call nothing.

- a guarded call (``proj.http``, ``proj.ahttp``, proj's own pipelines) reports success, or
  failure for a timeout, a connection error, a 5xx or a 429 (overload); our own 4xx is not
  reported;
- a task that made no guarded call reports its own outcome when it ends (a deferral, an
  open breaker or a rate-limit wait, is neither).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from proj import keys
from proj.guard import connections, flusher
from proj.resilience.outcomes import BUCKET_MS, TTL_S

logger = logging.getLogger("proj.concurrency")

#: Set in the worker's main process by the controller, inherited by forked pool processes.
ENABLED = False
#: This pool process's worker node name (from ``worker_process_init``).
NODE: str | None = None
#: Guarded calls reported since the current task began (prefork runs one task at a time).
calls_reported = 0


def enable() -> None:
    global ENABLED
    ENABLED = True


def set_node(name: str | None) -> None:
    global NODE
    NODE = name


class OutcomeRecorder:
    """Buffers ok/failed counts of one node and sends them from the flusher thread."""

    def __init__(self, node: str) -> None:
        self.key = keys.concurrency_window(node)
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.overloaded = 0
        self._warned_at = -1e9
        flusher.register(self)

    def record(self, ok: bool, overload: bool = False) -> None:
        """One outcome; ``overload`` a failure that was a 429."""
        with self._lock:
            if ok:
                self.ok += 1
            else:
                self.failed += 1
                self.overloaded += overload
        flusher.poke()

    def flush(self) -> None:
        with self._lock:
            ok, failed, over = self.ok, self.failed, self.overloaded
            self.ok = self.failed = self.overloaded = 0
        if not (ok or failed) or self.pid != os.getpid():
            return
        bucket = int(time.time() * 1000) // BUCKET_MS
        try:
            pipe = connections.sync_client().pipeline(transaction=False)
            if ok:
                pipe.hincrby(self.key, f"o:{bucket}", ok)
            if failed:
                pipe.hincrby(self.key, f"f:{bucket}", failed)
            if over:
                pipe.hincrby(self.key, f"l:{bucket}", over)
            pipe.expire(self.key, TTL_S)
            pipe.execute()
        except Exception as exc:
            now = time.monotonic()
            if now - self._warned_at > 10:
                self._warned_at = now
                logger.warning("could not report call outcomes: %s", exc)


_recorder: OutcomeRecorder | None = None


def recorder() -> OutcomeRecorder | None:
    """This process's recorder, when the node adapts its pool."""
    global _recorder
    if not (ENABLED and NODE):
        return None
    if _recorder is None or _recorder.pid != os.getpid():
        _recorder = OutcomeRecorder(NODE)
    return _recorder


def report_call(ok: bool | None, overload: bool = False) -> None:
    """One guarded call ended: ``ok`` False for a failure, None for no signal (our own 4xx);
    ``overload`` for a 429. Either way the task made a call and is not judged on its own."""
    global calls_reported
    calls_reported += 1
    rec = recorder()
    if rec is not None and ok is not None:
        rec.record(ok, overload)


def task_started() -> None:
    global calls_reported
    calls_reported = 0


def task_finished(ok: bool | None, overload: bool = False) -> None:
    """A task ended: ``ok`` None for a deferral, ``overload`` for a 429. Counted only if it
    made no guarded call."""
    if ok is None or calls_reported:
        return
    rec = recorder()
    if rec is not None:
        rec.record(ok, overload)
