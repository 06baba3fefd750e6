"""kombu's Redis transport, with one redis-py client per channel and one command per record.

kombu's Redis channel makes a new ``redis.Redis`` for every command it sends outside its
event loop (``Channel.conn_or_acquire``): every task message, every event, every ack. With
redis-py 8 that constructor alone costs about 0.16 ms here (it rebuilds its table of ~170
response callbacks each time: redis/redis-py#3624), more than the Redis round trip. The
client holds no connection of its own (each command borrows one from the channel's pool),
so one per channel does the same work.

A worker records every message it takes as unacknowledged (a sorted-set entry and a hash
field, which is how a killed worker's messages come back) and removes the record at the ack.
kombu sends each as a MULTI/EXEC transaction: four commands and four replies, parsed by the
process that feeds the pool, twice per task. Here each is one script call (EVALSHA), as
atomic, with one reply: the same keys and values, so kombu's restore reads them unchanged.
With a ``global_keyprefix`` (whose keys kombu rewrites per command) kombu's own path is kept.

:func:`register` makes it what ``redis://`` means to kombu in a process that loads proj's
Celery configuration (kombu's ``TRANSPORT_ALIASES``); ``rediss://`` and the others keep
kombu's own. As the ``redis`` alias, a connection still calls itself ``redis://...``, which is
what Flower's broker view needs to read the queues (a ``broker_transport`` class path would
make that ``proj.transport:Transport://...``, a broker Flower does not know).
"""

from __future__ import annotations

from time import time
from typing import Any

import kombu.transport
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

# KEYS: unacked index (sorted set), unacked (hash). kombu's layout: index score = when taken,
# hash field = delivery tag, value = JSON [raw message, exchange, routing key].
RECORD = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""
FORGET = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, recording and forgetting an unacknowledged message in one command."""

    _scripts: tuple[Any, Any] | None = None

    def _plain(self) -> bool:
        return not getattr(self.channel, "global_keyprefix", "")

    def _run(self, which: int, *args: Any) -> None:
        """Run RECORD (0) or FORGET (1) on the unacked keys with ``args``."""
        with self.channel.conn_or_acquire() as client:
            scripts = self._scripts
            if scripts is None:  # Script objects reload themselves after a Redis restart
                scripts = self._scripts = (
                    client.register_script(RECORD),
                    client.register_script(FORGET),
                )
            scripts[which](
                keys=[self.unacked_index_key, self.unacked_key], args=args, client=client
            )

    def append(self, message: Any, delivery_tag: str) -> None:
        if self._plain():
            delivery = message.delivery_info
            raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
            self._run(0, time(), delivery_tag, raw)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        if self._plain():
            self._run(1, delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
        else:
            super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self._plain() and not requeue:
            self._run(1, delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
        else:
            super().reject(delivery_tag, requeue=requeue)


class Channel(kombu_redis.Channel):
    QoS = QoS
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
