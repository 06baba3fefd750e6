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
"""

from __future__ import annotations

from typing import Any

from celery import signals
from kombu.transport import redis as kombu_redis

_KEPT = "_proj_connparams"  # channel attribute: {asynchronous: the last parameters built}
_ORIGINAL = kombu_redis.Channel._connparams


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


def patch() -> None:
    """Make kombu's Redis channels keep their connection parameters (idempotent)."""
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]


def install(app: Any) -> None:
    """Apply :func:`patch` when a worker of ``app`` starts, before it connects to the broker."""

    def on_worker_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            patch()

    signals.worker_init.connect(
        on_worker_init, weak=False, dispatch_uid=f"proj.broker_restart:{id(app)}"
    )
