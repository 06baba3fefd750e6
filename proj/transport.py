"""kombu's Redis transport, with one redis-py client per channel instead of one per command.

kombu's Redis channel makes a new ``redis.Redis`` for every command it sends outside its
event loop (``Channel.conn_or_acquire``): every task message, every event, every ack. With
redis-py 8 that constructor alone costs about 0.16 ms here (it rebuilds its table of ~170
response callbacks each time: redis/redis-py#3624), more than the Redis round trip. The
client holds no connection of its own (each command borrows one from the channel's pool),
so one per channel does the same work.

:func:`register` makes it what ``redis://`` means to kombu in a process that loads proj's
Celery configuration (kombu's ``TRANSPORT_ALIASES``); ``rediss://`` and the others keep
kombu's own. As the ``redis`` alias, a connection still calls itself ``redis://...``, which is
what Flower's broker view needs to read the queues (a ``broker_transport`` class path would
make that ``proj.transport:Transport://...``, a broker Flower does not know).
"""

from __future__ import annotations

from typing import Any

import kombu.transport
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the event loop's client: kombu already keeps that one
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        # A new pool (after a fork or a reconnect) gets a new client.
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def register() -> None:
    """Make ``redis://`` connections of this process use :class:`Transport` (idempotent)."""
    kombu.transport.TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
