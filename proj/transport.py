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

In a worker (a process running kombu's event loop), an ack does not wait for Redis: the
message counts as acknowledged at once and its record is removed by the next record's script
call, which a busy worker makes within a millisecond, or after :data:`FORGET_DELAY_S` by a
timer. That is one round trip per task instead of two, in the one process that feeds the whole
pool. A worker stopped in between leaves the record of a finished task behind, so after the
visibility timeout it is delivered again: what acks late already allow (a crash between the
end of a task and its ack), and proj's task base does not run a task again whose result is
stored. A warm shutdown removes them before it gives back what it held. Outside an event loop
an ack removes its record before it returns, as kombu's does.

:func:`register` makes it what ``redis://`` means to kombu in a process that loads proj's
Celery configuration (kombu's ``TRANSPORT_ALIASES``); ``rediss://`` and the others keep
kombu's own. As the ``redis`` alias, a connection still calls itself ``redis://...``, which is
what Flower's broker view needs to read the queues (a ``broker_transport`` class path would
make that ``proj.transport:Transport://...``, a broker Flower does not know).
"""

from __future__ import annotations

import logging
from time import time
from typing import Any

import kombu.transport
import redis
from kombu.asynchronous.hub import get_event_loop
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

logger = logging.getLogger(__name__)

# KEYS: unacked index (sorted set), unacked (hash). kombu's layout: index score = when taken,
# hash field = delivery tag, value = JSON [raw message, exchange, routing key].
# RECORD: ARGV = when, tag, value, then the tags of acked messages to forget.
RECORD = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
for i = 4, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
return 1
"""
# FORGET: ARGV = the tags of acked (or dropped) messages.
FORGET = """
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
return 1
"""
_RECORD, _FORGET = 0, 1
#: Longest an acked message's record waits for the next record's script call to remove it.
FORGET_DELAY_S = 0.01
#: With Redis unreachable, how often the timer tries again.
FORGET_RETRY_S = 1.0
#: Most tags one FORGET call removes.
FORGET_CHUNK = 500


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, recording and forgetting an unacknowledged message in one command."""

    _scripts: tuple[Any, Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Tags acked but still recorded in Redis, oldest first (worker event loop only).
        self._forget: list[str] = []
        self._forget_timer: Any = None

    def _plain(self) -> bool:
        return not getattr(self.channel, "global_keyprefix", "")

    def _run(self, which: int, *args: Any) -> None:
        """Run RECORD or FORGET on the unacked keys with ``args``."""
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
            acked = self._forget[:FORGET_CHUNK]
            self._run(_RECORD, time(), delivery_tag, raw, *acked)
            del self._forget[: len(acked)]
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        if not self._plain():
            super().ack(delivery_tag)
            return
        hub = get_event_loop()
        if hub is None:
            self._run(_FORGET, delivery_tag)
        else:  # forgotten with the next record, or by the timer
            self._forget.append(delivery_tag)
            if self._forget_timer is None:
                self._forget_timer = hub.call_later(FORGET_DELAY_S, self._forget_due)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self._plain() and not requeue:
            self._run(_FORGET, delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
        else:
            super().reject(delivery_tag, requeue=requeue)

    def _forget_due(self) -> None:
        self._forget_timer = None
        if not self.forget_acked():
            hub = get_event_loop()
            if hub is not None:
                self._forget_timer = hub.call_later(FORGET_RETRY_S, self._forget_due)

    def forget_acked(self, last: bool = False) -> bool:
        """Remove the records of acked messages still in Redis; False if Redis could not be
        reached (they are kept, to try again, unless this is the ``last`` try)."""
        while self._forget:
            tags = self._forget[:FORGET_CHUNK]
            try:
                self._run(_FORGET, *tags)
            except (redis.RedisError, OSError) as err:
                logger.warning(
                    "Redis unreachable: the records of %d acknowledged messages stay; %s (%s)",
                    len(self._forget),
                    "they come back after the visibility timeout (a task whose result is "
                    "stored is then skipped)"
                    if last
                    else "trying again",
                    err,
                )
                if last:
                    self._forget.clear()
                return False
            del self._forget[: len(tags)]
        return True

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        # A warm shutdown or a closed channel: acked messages first lose their records.
        if self._forget_timer is not None:
            self._forget_timer.cancel()
            self._forget_timer = None
        self.forget_acked(last=True)
        return super().restore_unacked_once(stderr)


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
