"""A worker takes a message off a Redis queue (BRPOP) and then records it as unacknowledged
(``QoS.append``: ZADD + HSET, one script call in proj's transport). Redis killed between the
two: the transport alone drops the message; with :mod:`proj.broker_restart` the worker waits
for Redis and records it, so the message is acknowledged normally or delivered again, never
lost. Both kombu's Redis transport and proj's (proj/transport.py) are checked.

Real parts: this test's own redis-server (append-only file on, SIGKILLed and started again on
its port and data) and the transports. The only thing added is the moment of the kill: just
before the record is written.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.transport import redis as kombu_redis

from proj import broker_restart, transport
from proj.stack.redis_server import RedisServer

QUEUE = Queue("window", Exchange("window", type="direct"), routing_key="window")
DOWN_S = 1.0
TRANSPORTS = {"kombu": kombu_redis.Transport, "proj": transport.Transport}


def _record(kind: str) -> Callable[..., None]:
    """The transport's own ``append``, without proj's retry."""
    own = TRANSPORTS[kind].Channel.QoS.__dict__["append"]
    return getattr(own, "__wrapped__", own)  # type: ignore[no-any-return]


@pytest.fixture
def done() -> Iterator[threading.Event]:
    """Set at the end of the test: lets the thread that restarted Redis end."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def server(tmp_path: Path, done: threading.Event) -> Iterator[RedisServer]:
    own = RedisServer(tmp_path / "redis").start()  # this test's own Redis: it kills it
    try:
        yield own
    finally:
        own.stop()


def _kill_then_restart(server: RedisServer, done: threading.Event) -> threading.Event:
    """SIGKILL Redis now; start it again on the same port and data ``DOWN_S`` later. The
    thread that starts it lives until ``done`` (a child started from a thread dies with
    that thread); the returned event is set once Redis is back."""
    proc = server.process
    assert proc is not None
    proc.signal_group(signal.SIGKILL)
    server.stop()  # reaps the killed process
    back = threading.Event()

    def restart() -> None:
        time.sleep(DOWN_S)
        server.start()
        back.set()
        done.wait()

    threading.Thread(target=restart, daemon=True).start()
    return back


def _killing(
    server: RedisServer, done: threading.Event, append: Callable[..., None], box: dict[str, Any]
) -> Any:
    """``append``, preceded (once) by the kill: the message has left the queue, no record yet."""

    def wrapper(self: Any, message: Any, delivery_tag: str) -> None:
        if "back" not in box:
            box["back"] = _kill_then_restart(server, done)
        append(self, message, delivery_tag)

    return wrapper


def _publish(url: str, body: dict[str, int]) -> None:
    with Connection(url, transport=kombu_redis.Transport) as conn:
        Producer(conn.default_channel).publish(
            body, exchange=QUEUE.exchange, routing_key="window", declare=[QUEUE], serializer="json"
        )


def _take_one(url: str, kind: str, got: list[Any]) -> Connection:
    """Consume (acks late) until one message arrives; the connection stays open."""
    conn = Connection(
        url, transport=TRANSPORTS[kind], transport_options={"visibility_timeout": 3600}
    )
    consumer = Consumer(conn.default_channel, [QUEUE], accept=["json"])
    consumer.register_callback(lambda body, message: got.append(message))
    consumer.consume()
    deadline = time.monotonic() + 15
    while not got and time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=1)
        except TimeoutError:
            continue
    return conn


def _held(url: str) -> tuple[int, int]:
    """(messages waiting in the queue, messages recorded as unacknowledged)."""
    client = redis_lib.Redis.from_url(url)
    try:
        return client.llen("window"), client.hlen("unacked")
    finally:
        client.close()


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_message_taken_as_redis_dies_is_recorded_when_it_returns(
    kind: str, server: RedisServer, done: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    box: dict[str, Any] = {}
    qos = TRANSPORTS[kind].Channel.QoS
    killing = _killing(server, done, _record(kind), box)
    monkeypatch.setattr(qos, "append", broker_restart._retrying(killing))
    _publish(server.url, {"n": 1})

    got: list[Any] = []
    conn = _take_one(server.url, kind, got)
    try:
        assert box["back"].wait(30)
        assert [m.payload for m in got] == [{"n": 1}]  # delivered once Redis took the record
        assert _held(server.url) == (0, 1)  # off the queue, recorded: redelivered if not acked
        got[0].ack()
        assert _held(server.url) == (0, 0)
    finally:
        conn.release()


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_without_the_retry_a_message_taken_as_redis_dies_is_dropped(
    kind: str, server: RedisServer, done: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gap the retry closes, in kombu 5.7.0 alone (and in proj's transport without it): if
    the kombu case starts failing, kombu records the message itself and proj's retry of the
    record can go."""
    box: dict[str, Any] = {}
    qos = TRANSPORTS[kind].Channel.QoS
    monkeypatch.setattr(qos, "append", _killing(server, done, _record(kind), box))
    _publish(server.url, {"n": 1})

    got: list[Any] = []
    with pytest.raises(redis_lib.ConnectionError):
        _take_one(server.url, kind, got).release()
    assert box["back"].wait(30)
    assert got == []
    assert _held(server.url) == (0, 0)  # not in the queue, not recorded: lost
