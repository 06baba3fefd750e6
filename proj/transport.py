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

In a worker (in the thread running its consumer's event loop: :func:`bind_event_loop`), an
ack does not wait for Redis: the message counts as acknowledged at once and its record is
removed by the next record's script call, which a busy worker makes within a millisecond, or
after :data:`FORGET_DELAY_S` by a timer. That is one round trip per task instead of two, in
the one process that feeds the whole pool. A worker stopped in between leaves the record of a
finished task behind, so after the visibility timeout it is delivered again: what acks late
already allow (a crash between the end of a task and its ack), and proj's task base does not
run a task again whose result is stored. A warm shutdown removes them before it gives back
what it held; a channel closed while Redis is unreachable hands them to the process's next
channel. Anywhere else (a client, a pool process, another thread) an ack removes its record
before it returns, as kombu's does.

:func:`register` makes it what ``redis://`` means to kombu in a process that loads proj's
Celery configuration (kombu's ``TRANSPORT_ALIASES``); ``rediss://`` and the others keep
kombu's own. As the ``redis`` alias, a connection still calls itself ``redis://...``, which is
what Flower's broker view needs to read the queues (a ``broker_transport`` class path would
make that ``proj.transport:Transport://...``, a broker Flower does not know).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from time import time
from typing import Any

import kombu.transport
import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

logger = logging.getLogger(__name__)

# KEYS: unacked index (sorted set), unacked (hash). kombu's layout: index score = when taken,
# hash field = delivery tag, value = JSON [raw message, exchange, routing key].
# RECORD: ARGV = when, tag, value, then the tags of acked messages to forget (removed first:
# a message given back keeps its tag, so its new record must not go with the old one's).
RECORD = """
for i = 4, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
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
FORGET_DELAY_S = 0.05
#: With Redis unreachable, how often the timer tries again.
FORGET_RETRY_S = 1.0
#: Most tags one script call removes.
FORGET_CHUNK = 500

#: The worker's event loop, as (hub, pid, thread): set by :func:`bind_event_loop` each time a
#: worker's consumer starts its loop, cleared when that loop closes (a reconnect resets it).
#: Only an ack made in that process and thread is left for later.
_loop: tuple[Any, int, int] | None = None
#: Tags whose removal failed as their channel closed (Redis unreachable), by Redis and keys:
#: the next channel of this process on the same keys removes them with its first record.
_orphans: dict[tuple[Any, ...], list[str]] = {}


def bind_event_loop(hub: Any) -> None:
    """Let acks made in this thread leave their removal to the next record or ``hub``'s timer
    (a worker's consumer calls it as its event loop starts, after every reconnect)."""
    global _loop
    _loop = (hub, os.getpid(), threading.get_ident())
    hub.on_close.add(unbind_event_loop)


def unbind_event_loop(hub: Any = None) -> None:
    """Acks wait for Redis again (``hub``: only if it is the one bound; the loop's close)."""
    global _loop
    if _loop is not None and (hub is None or _loop[0] is hub):
        _loop = None


def _event_loop() -> Any:
    """The bound event loop if this is its process and thread, else None."""
    loop = _loop
    if loop is not None and loop[1] == os.getpid() and loop[2] == threading.get_ident():
        return loop[0]
    return None


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, recording and forgetting an unacknowledged message in one command."""

    _scripts: tuple[Any, Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Tags acked but still recorded in Redis (in a worker's event loop only). A deque:
        #: a shutdown thread may flush while the loop's thread takes some (each pop atomic).
        self._forget: deque[str] = deque()
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

    def _take_acked(self, most: int | None = FORGET_CHUNK) -> list[str]:
        """Up to ``most`` pending tags (None: all), taken off the list (put back if their
        call fails)."""
        pending = self._forget
        taken: list[str] = []
        while pending and (most is None or len(taken) < most):
            try:
                taken.append(pending.popleft())
            except IndexError:  # taken by another thread meanwhile
                break
        return taken

    def append(self, message: Any, delivery_tag: str) -> None:
        if self._plain():
            if _orphans:
                self._adopt_orphans()
            delivery = message.delivery_info
            raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
            acked = self._take_acked()
            try:
                self._run(_RECORD, time(), delivery_tag, raw, *acked)
            except BaseException:
                self._forget.extend(acked)
                raise
            if self._forget and delivery_tag in self._forget:  # given back, still pending
                self._forget.remove(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        if not self._plain():
            super().ack(delivery_tag)
            return
        hub = _event_loop()
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
            hub = _event_loop()
            if hub is not None:
                self._forget_timer = hub.call_later(FORGET_RETRY_S, self._forget_due)

    def forget_acked(self, last: bool = False) -> bool:
        """Remove the records of acked messages still in Redis; False if Redis could not be
        reached. The tags are kept to try again or, on the ``last`` try (the channel closes),
        handed to this process's next channel on the same Redis."""
        while tags := self._take_acked():
            try:
                self._run(_FORGET, *tags)
            except (redis.RedisError, OSError) as err:
                self._forget.extend(tags)
                logger.warning(
                    "Redis unreachable: the records of %d acknowledged messages stay until %s (%s)",
                    len(self._forget),
                    "this worker's next connection takes a message" if last else "it is back",
                    err,
                )
                if last:
                    self._orphan()
                return False
        return True

    def _place(self) -> tuple[Any, ...]:
        """Which Redis and keys this channel's records are in."""
        info = self.channel.connection.client
        return (
            info.hostname,
            info.port,
            info.virtual_host,
            self.unacked_index_key,
            self.unacked_key,
        )

    def _orphan(self) -> None:
        try:
            place = self._place()
        except Exception:  # a channel already torn down: its records wait for the sweep
            return
        _orphans.setdefault(place, []).extend(self._take_acked(None))

    def _adopt_orphans(self) -> None:
        tags = _orphans.pop(self._place(), None)
        if tags:
            self._forget.extend(tags)

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
