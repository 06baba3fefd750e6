"""How many messages wait in a queue, on either broker proj runs on.

On Redis (the default) a queue is one list per priority step (kombu's Redis transport): the
depth is the sum of their lengths, read in one pipeline. On RabbitMQ (``CELERY_BROKER_URL=
amqp://...``, Redis kept for results and state) a passive ``queue.declare`` answers with the
queue's message count, without creating anything. ``proj status``, ``proj metrics``, the
publisher's ``max_depth`` check and the adaptive controller's backlog all read depths here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import kombu
import redis

from proj import keys

_AMQP = ("amqp", "amqps", "pyamqp", "librabbitmq")
#: proj's exchange: every queue is bound to it by its own name.
EXCHANGE = kombu.Exchange("proj", type="direct")


def is_amqp(broker_url: str) -> bool:
    """True when the broker is RabbitMQ (an AMQP URL)."""
    return urlsplit(broker_url).scheme.split("+")[0] in _AMQP


def queue_for(name: str, broker_url: str) -> kombu.Queue:
    """The queue ``name`` as declared on this broker: on RabbitMQ a durable quorum queue."""
    if is_amqp(broker_url):
        return kombu.Queue(
            name,
            EXCHANGE,
            routing_key=name,
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )
    return kombu.Queue(name, EXCHANGE, routing_key=name)


def redis_depths(client: redis.Redis, names: Iterable[str]) -> dict[str, int]:
    """Depth of each Redis-broker queue (every priority list of each), one round trip."""
    names = list(names)
    pipe = client.pipeline(transaction=False)
    for name in names:
        for lst in keys.queue_lists(name):
            pipe.llen(lst)
    lengths = [int(n) for n in pipe.execute()]
    per = len(keys.PRIORITY_STEPS)
    return {name: sum(lengths[i * per : (i + 1) * per]) for i, name in enumerate(names)}


def amqp_depths(connection: Any, names: Iterable[str]) -> dict[str, int]:
    """Depth of each RabbitMQ queue through ``connection`` (a kombu connection); a queue that
    does not exist yet holds nothing."""
    out: dict[str, int] = {}
    for name in names:
        channel = connection.channel()
        try:
            out[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
        except connection.channel_errors:  # 404: not declared yet (the channel is closed)
            out[name] = 0
        finally:
            with contextlib.suppress(Exception):
                channel.close()
    return out


class DepthReader:
    """Reads depths again and again over one connection of its own (made on first use, again
    after a fork, and again after an AMQP connection dropped), or through ``redis_client``
    when given: the adaptive controller every tick, the publisher's ``max_depth`` thread."""

    def __init__(self, broker_url: str, redis_client: redis.Redis | None = None) -> None:
        self.broker_url = broker_url
        self.amqp = is_amqp(broker_url)
        self._given = None if self.amqp else redis_client
        self._own: Any = None
        self._pid = os.getpid()

    def __call__(self, names: Iterable[str]) -> dict[str, int]:
        if self._pid != os.getpid():  # a forked child: the parent's connection is not ours
            self._own, self._pid = None, os.getpid()
        if self._given is not None:
            return redis_depths(self._given, names)
        if self._own is None:
            self._own = (
                kombu.Connection(self.broker_url, connect_timeout=5)
                if self.amqp
                else redis.Redis.from_url(self.broker_url, socket_connect_timeout=5)
            )
        if not self.amqp:
            return redis_depths(self._own, names)
        try:
            return amqp_depths(self._own, names)
        except Exception:
            self.close()  # the next call connects again
            raise

    def close(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            with contextlib.suppress(Exception):
                own.close()


def depths(
    broker_url: str, names: Iterable[str], redis_client: redis.Redis | None = None
) -> dict[str, int]:
    """Depth of each queue on the broker at ``broker_url``, once; a Redis broker is read
    through ``redis_client`` when given (the caller's own client on the same Redis)."""
    reader = DepthReader(broker_url, redis_client)
    try:
        return reader(names)
    finally:
        reader.close()
