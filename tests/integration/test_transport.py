"""proj's Redis transport (proj/transport.py) records a message it takes as unacknowledged, and
forgets it at the ack, with one script call each instead of kombu's MULTI/EXEC. The records
must be kombu's own: same keys, same values, so kombu's restore (a channel closed with
messages unacknowledged, a visibility timeout passed) gives them back unchanged.

In a worker's event loop an ack does not wait for Redis: the record goes with the next
record's script call, or with a timer, and a closed channel removes it before it restores
what it held.

Real parts: the session's Redis (this module's own, for Redis going away), kombu connections
with either transport, kombu's own event loop (``Hub``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.asynchronous.hub import Hub
from kombu.transport import redis as kombu_redis
from kombu.utils.json import loads

from proj import transport
from proj.stack.redis_server import RedisServer

QUEUE = Queue("tq", Exchange("tq", type="direct"), routing_key="tq")


def _publish(url: str, *bodies: dict[str, int]) -> None:
    with Connection(url, transport=kombu_redis.Transport) as conn:
        producer = Producer(conn.default_channel)
        for body in bodies:
            producer.publish(
                body, exchange=QUEUE.exchange, routing_key="tq", declare=[QUEUE], serializer="json"
            )


def _take(conn: Connection, n: int, prefetch: int = 0) -> list[Any]:
    """Consume (acks late, prefetch ``n`` or ``prefetch``) until ``n`` messages have arrived."""
    got: list[Any] = []
    consumer = Consumer(
        conn.default_channel, [QUEUE], accept=["json"], prefetch_count=prefetch or n
    )
    consumer.register_callback(lambda body, message: got.append(message))
    consumer.consume()
    deadline = time.monotonic() + 15
    while len(got) < n and time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=1)
        except TimeoutError:
            continue
    assert len(got) == n
    return got


@pytest.fixture
def url(redis_client: redis_lib.Redis) -> str:
    kwargs = redis_client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


@pytest.fixture
def proj_conn(url: str) -> Iterator[Connection]:
    conn = Connection(url, transport=transport.Transport)
    yield conn
    conn.release()


def _records(client: redis_lib.Redis, prefix: str = "") -> tuple[set[str], dict[str, Any]]:
    index = {t.decode() for t in client.zrange(f"{prefix}unacked_index", 0, -1)}
    table = {k.decode(): loads(v) for k, v in client.hgetall(f"{prefix}unacked").items()}
    return index, table


def test_a_taken_message_is_recorded_as_kombu_records_it(
    url: str, redis_client: redis_lib.Redis, proj_conn: Connection
) -> None:
    _publish(url, {"n": 1}, {"n": 2})
    before = time.time()
    messages = _take(proj_conn, 2)
    assert type(proj_conn.default_channel.qos) is transport.QoS

    index, table = _records(redis_client)
    tags = {m.delivery_tag for m in messages}
    assert index == tags == set(table)
    for m in messages:
        assert table[m.delivery_tag] == [m._raw, "tq", "tq"]  # kombu's [message, exchange, key]
        score = redis_client.zscore("unacked_index", m.delivery_tag)
        assert score is not None and before - 1 <= score <= time.time() + 1

    messages[0].ack()
    messages[1].reject(requeue=False)
    assert _records(redis_client) == (set(), {})
    assert redis_client.llen("tq") == 0  # a rejected message is gone, as in kombu


def test_a_requeued_message_goes_back_to_its_queue(
    url: str, redis_client: redis_lib.Redis, proj_conn: Connection
) -> None:
    _publish(url, {"n": 1})
    [message] = _take(proj_conn, 1)
    message.requeue()
    assert _records(redis_client) == (set(), {})
    with Connection(url, transport=kombu_redis.Transport) as conn:
        assert [m.payload for m in _take(conn, 1)] == [{"n": 1}]


def test_kombu_restores_what_proj_recorded_once_the_visibility_timeout_passes(
    url: str, redis_client: redis_lib.Redis, proj_conn: Connection
) -> None:
    """A worker killed while holding a message: kombu's sweep of another worker, with its
    own transport, finds proj's record and puts the message back, unchanged."""
    _publish(url, {"n": 7})
    [taken] = _take(proj_conn, 1)
    with Connection(
        url, transport=kombu_redis.Transport, transport_options={"visibility_timeout": 0}
    ) as other:
        qos = other.default_channel.qos
        time.sleep(0.01)
        qos.restore_visible(num=10)
        assert _records(redis_client) == (set(), {})
        [again] = _take(other, 1)
        assert again.payload == {"n": 7}
        assert again.headers == {**taken.headers, "redelivered": True}
        again.ack()


def test_a_closed_channel_gives_back_what_it_held(url: str, redis_client: redis_lib.Redis) -> None:
    _publish(url, {"n": 1}, {"n": 2})
    conn = Connection(url, transport=transport.Transport)
    _take(conn, 2)
    conn.release()  # a warm shutdown: unacknowledged messages are restored
    assert _records(redis_client) == (set(), {})
    assert redis_client.llen("tq") == 2


def test_the_record_survives_a_flushed_script_cache(
    url: str, redis_client: redis_lib.Redis, proj_conn: Connection
) -> None:
    """A restarted Redis has forgotten the scripts: they are loaded again, nothing fails."""
    _publish(url, {"n": 1}, {"n": 2})
    [first] = _take(proj_conn, 1)
    redis_client.script_flush()
    first.ack()
    _publish(url, {"n": 3})
    second = _take(proj_conn, 1)[0]
    assert set(_records(redis_client)[1]) == {second.delivery_tag}
    second.ack()
    assert _records(redis_client) == (set(), {})


def test_with_a_global_key_prefix_kombu_s_own_path_is_kept(
    url: str, redis_client: redis_lib.Redis
) -> None:
    options = {"global_keyprefix": "pfx:"}
    with Connection(url, transport=kombu_redis.Transport, transport_options=options) as conn:
        Producer(conn.default_channel).publish(
            {"n": 1}, exchange=QUEUE.exchange, routing_key="tq", declare=[QUEUE]
        )
    with Connection(url, transport=transport.Transport, transport_options=options) as conn:
        [message] = _take(conn, 1)
        assert set(_records(redis_client, "pfx:")[1]) == {message.delivery_tag}
        assert _records(redis_client) == (set(), {})
        message.ack()
        assert _records(redis_client, "pfx:") == (set(), {})


@pytest.fixture
def hub() -> Iterator[Hub]:
    """kombu's event loop, bound as a worker's consumer binds it when its loop starts."""
    loop = Hub()
    transport.bind_event_loop(loop)
    yield loop
    loop.close()  # unbinds it
    assert transport._event_loop() is None


def _fire_due(hub: Hub, wait_s: float) -> None:
    time.sleep(wait_s)
    hub.fire_timers(max_timers=100, propagate=(Exception,))


def test_in_an_event_loop_an_ack_goes_with_the_next_record(
    url: str, redis_client: redis_lib.Redis, proj_conn: Connection, hub: Hub
) -> None:
    assert transport._event_loop() is hub
    _publish(url, {"n": 1}, {"n": 2}, {"n": 3})
    first, second = _take(proj_conn, 2)
    first.ack()
    assert first.acknowledged
    # acknowledged at once (the channel may take another message) ...
    assert proj_conn.default_channel.qos.can_consume()
    # ... and its record is still in Redis until the next script call
    assert set(_records(redis_client)[1]) == {first.delivery_tag, second.delivery_tag}
    [third] = _take(proj_conn, 1, prefetch=2)
    assert set(_records(redis_client)[1]) == {second.delivery_tag, third.delivery_tag}
    second.ack()
    third.ack()
    _fire_due(hub, transport.FORGET_DELAY_S * 2)
    assert _records(redis_client) == (set(), {})


def test_with_no_message_coming_the_timer_removes_acked_records(
    url: str, redis_client: redis_lib.Redis, proj_conn: Connection, hub: Hub
) -> None:
    _publish(url, {"n": 1})
    [message] = _take(proj_conn, 1)
    message.ack()
    hub.fire_timers(propagate=(Exception,))  # not due yet: nothing removed
    assert set(_records(redis_client)[1]) == {message.delivery_tag}
    _fire_due(hub, transport.FORGET_DELAY_S * 2)
    assert _records(redis_client) == (set(), {})
    assert not proj_conn.default_channel.qos._forget


def test_a_closed_channel_removes_acked_records_and_gives_back_the_rest(
    url: str, redis_client: redis_lib.Redis, hub: Hub
) -> None:
    _publish(url, {"n": 1}, {"n": 2})
    conn = Connection(url, transport=transport.Transport)
    done, held = _take(conn, 2)
    done.ack()
    conn.release()  # a warm shutdown before the timer fired
    assert _records(redis_client) == (set(), {})
    assert redis_client.llen("tq") == 1  # the held one is back, the acked one is not
    with Connection(url, transport=kombu_redis.Transport) as other:
        [again] = _take(other, 1)
        assert again.payload == held.payload
        again.ack()


@pytest.fixture
def own_server(tmp_path: Any) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()  # appendonly: restarts with its data
    try:
        yield server
    finally:
        server.stop()


def test_acked_records_wait_for_redis_to_come_back(own_server: RedisServer, hub: Hub) -> None:
    """Redis unreachable when the timer fires: the tags are kept and removed on its return."""
    _publish(own_server.url, {"n": 1})
    conn = Connection(own_server.url, transport=transport.Transport)
    [message] = _take(conn, 1)
    message.ack()
    qos = conn.default_channel.qos
    own_server.stop()
    _fire_due(hub, transport.FORGET_DELAY_S * 2)
    assert list(qos._forget) == [message.delivery_tag]
    assert qos._forget_timer is not None  # tries again
    own_server.start()
    client = redis_lib.Redis.from_url(own_server.url)
    try:
        assert set(_records(client)[1]) == {message.delivery_tag}
        assert qos.forget_acked()
        assert _records(client) == (set(), {})
    finally:
        client.close()
        conn.release()


def test_a_channel_closed_while_redis_is_down_hands_its_acks_to_the_next(
    own_server: RedisServer, hub: Hub
) -> None:
    """A worker's connection lost with acks pending: the next connection of the process
    removes their records with its first record once Redis is back."""
    _publish(own_server.url, {"n": 1})
    conn = Connection(own_server.url, transport=transport.Transport)
    [first] = _take(conn, 1)
    first.ack()
    own_server.stop()
    conn.default_channel.close()  # a lost connection's channel closes: the removal fails
    conn.collect()
    own_server.start()
    client = redis_lib.Redis.from_url(own_server.url)
    again = Connection(own_server.url, transport=transport.Transport)
    try:
        assert first.delivery_tag in _records(client)[1]
        _publish(own_server.url, {"n": 3})
        taken = _take(again, 1)
        assert first.delivery_tag not in _records(client)[1]
        assert taken[0].delivery_tag in _records(client)[1]
    finally:
        again.release()
        client.close()


def test_an_ack_from_another_thread_or_after_the_loop_closed_waits_for_redis(
    url: str, redis_client: redis_lib.Redis, proj_conn: Connection, hub: Hub
) -> None:
    """Only the loop's own thread leaves the removal for later: a thread's ack (and a forked
    pool process's: another pid) removes the record before it returns, as after a reset."""
    _publish(url, {"n": 1}, {"n": 2})
    first, second = _take(proj_conn, 2)
    thread = threading.Thread(target=first.ack)
    thread.start()
    thread.join()
    assert set(_records(redis_client)[1]) == {second.delivery_tag}
    hub.reset()  # Celery resets the loop on a lost connection: nothing would fire the timer
    assert transport._event_loop() is None
    second.ack()
    assert _records(redis_client) == (set(), {})


def test_a_message_given_back_with_its_tag_still_pending_keeps_its_new_record(
    url: str, redis_client: redis_lib.Redis, proj_conn: Connection, hub: Hub
) -> None:
    """kombu gives a message back with its delivery tag: its new record must not go with
    the removal of the old one."""
    _publish(url, {"n": 1})
    [message] = _take(proj_conn, 1)
    message.ack()
    qos = proj_conn.default_channel.qos
    qos.append(message, message.delivery_tag)  # taken again, same tag, removal pending
    assert set(_records(redis_client)[1]) == {message.delivery_tag}
    _fire_due(hub, transport.FORGET_DELAY_S * 2)
    assert set(_records(redis_client)[1]) == {message.delivery_tag}
    qos.ack(message.delivery_tag)
