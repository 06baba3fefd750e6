"""Workers survive a Redis restart: a workaround for celery 5.7.0 with kombu 5.7.0.

On a lost broker connection, celery 5.7.0's consumer first ``collect()``s the connection,
which detaches kombu's transport from it (``transport.client = None``, kombu/connection.py:429),
then ``close()``s it as well (celery/worker/consumer/consumer.py:487, new in 5.7.0: 5.6.3 only
collects). A consumer channel that was waiting on BRPOP while holding unacknowledged messages
is still open at that point (its first close raised ConnectionError from ``_brpop_read``), so
the second close restores those messages, builds a new connection pool from the detached
``transport.client`` (kombu/transport/redis.py:1957) and raises ``AttributeError: 'NoneType'
object has no attribute 'hostname'``. Celery ignores connection errors there, not that one:
"Unrecoverable error", the worker exits. Same failure as celery/kombu#582 (kombu 3.0).

The fix: a Redis channel keeps the connection parameters it built last and reuses them once
its transport is detached. The restore then fails as any call to a Redis that is down does
(ConnectionError, ignored by Celery), the messages stay in Redis's unacked set, and the tasks
still running are acknowledged on that channel after the reconnect.

:func:`install` applies it in the app's worker processes only. Remove it when a Celery/kombu
release passes tests/chaos/test_broker_restart.py without it.

A second gap, in kombu's Redis transport: a worker takes a message with BRPOP (the message leaves
the queue) and records it as unacknowledged with a second command (``QoS.append``: ZADD and
HSET; one script call in proj's transport). If Redis goes away between the two, the record
fails, the message is dropped and nothing will ever deliver it again (kombu #305): one task in
about fifty restarts of tests/chaos/test_broker_restart.py. proj retries the record (kombu's
and proj's transport's) until Redis answers (the consumer
waits, as it does while it reconnects), for at most :data:`RECORD_DEADLINE_S`; past that the
task still runs here, held in memory only, and one line says so. Tested by
tests/integration/test_unacked_record.py, which kills Redis in that window.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import redis
from celery import signals
from celery.utils.log import get_logger
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from proj import transport
from proj.resilience.backoff import Backoff

logger = get_logger(__name__)

_KEPT = "_proj_connparams"  # channel attribute: {asynchronous: the last parameters built}
_ORIGINAL = kombu_redis.Channel._connparams
#: The QoS classes whose ``append`` is retried: kombu's, and proj's (proj/transport.py).
_QOS = (kombu_redis.QoS, transport.QoS)

RECORD_DEADLINE_S = 60.0
"""How long a worker waits for Redis to record a message it has just taken, before it runs the
task with the message held in memory only."""
RECORD_BACKOFF = Backoff(base_s=0.05, max_s=1.0)
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


def _connparams(self: Any, asynchronous: bool = False) -> Any:
    """kombu's ``Channel._connparams``, answered from the channel's own copy once the
    transport no longer knows its connection."""
    kept: dict[bool, dict[str, Any]] = self.__dict__.setdefault(_KEPT, {})
    transport = self.connection
    if (transport is None or transport.client is None) and asynchronous in kept:
        return dict(kept[asynchronous])
    params = _ORIGINAL(self, asynchronous)
    kept[asynchronous] = dict(params)
    return params


def _task_id(message: Any) -> str:
    headers = getattr(message, "headers", None) or {}
    return str(headers.get("id") or getattr(message, "delivery_tag", "?"))


def _retrying(record: Any) -> Any:
    """A QoS ``append`` (record a message just taken as unacknowledged) retried while Redis
    is unreachable instead of dropping the message."""

    @functools.wraps(record)
    def append(self: Any, message: Any, delivery_tag: str) -> None:
        deadline = time.monotonic() + RECORD_DEADLINE_S
        attempt = 0
        while True:
            try:
                record(self, message, delivery_tag)
            except _UNREACHABLE as err:
                attempt += 1
                if time.monotonic() >= deadline:
                    logger.error(
                        "Redis unreachable for %.0f s: task %s runs without an unacknowledged "
                        "record; if this worker stops before it ends, it is not delivered "
                        "again (%s)",
                        RECORD_DEADLINE_S,
                        _task_id(message),
                        err,
                    )
                    virtual.QoS.append(self, message, delivery_tag)
                    return
                if attempt == 1:
                    logger.warning(
                        "Redis went away as task %s was taken from the queue: waiting to "
                        "record it as unacknowledged (%s)",
                        _task_id(message),
                        err,
                    )
                time.sleep(RECORD_BACKOFF.delay(attempt))
            else:
                if attempt:
                    logger.warning("task %s recorded as unacknowledged", _task_id(message))
                return

    append._proj_retrying = True  # type: ignore[attr-defined]
    return append


def patch() -> None:
    """Make kombu's Redis channels keep their connection parameters and retry the record of
    a message just taken (idempotent)."""
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]
    for cls in _QOS:
        own = cls.__dict__["append"]
        if not getattr(own, "_proj_retrying", False):
            cls.append = _retrying(own)  # type: ignore[method-assign]


def install(app: Any) -> None:
    """Apply :func:`patch` when a worker of ``app`` starts, before it connects to the broker."""

    def on_worker_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            patch()

    signals.worker_init.connect(
        on_worker_init, weak=False, dispatch_uid=f"proj.broker_restart:{id(app)}"
    )
