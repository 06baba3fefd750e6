"""The batch store on a real Redis, one test per rule: the result cache, in-flight markers,
attempts and dead letters the runner keeps through it, and a watcher's one connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis as redis_lib
import redis.asyncio as aioredis

from proj import keys
from proj.batch.dlq import DeadLetters
from proj.batch.lease import Marker, RunnerLeases
from proj.batch.progress import CLIENT_NAME
from proj.batch.store import BatchStore, Progress
from proj.batch.submit import BatchHandle

T = TypeVar("T")
B = "b-store"
P = "company"


def _url(client: redis_lib.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def _run(client: redis_lib.Redis, fn: Callable[[BatchStore], Awaitable[T]]) -> T:
    async def main() -> T:
        r = aioredis.Redis.from_url(_url(client))
        try:
            return await fn(BatchStore(r, ttl_s=600))
        finally:
            await r.aclose()

    return asyncio.run(main())


def _create(client: redis_lib.Redis, n: int) -> None:
    items = [{"domain": f"s{i}.com"} for i in range(n)]
    created = _run(
        client,
        lambda s: s.create(
            B, P, items, [f"k{i}" for i in range(n)], duplicates=0, urgent=False, now=time.time()
        ),
    )
    assert created


def test_store_cached_answers_only_keys_with_a_cached_result(
    redis_client: redis_lib.Redis,
) -> None:
    redis_client.set(keys.cache(P, "k1"), '{"ok": 1}')
    assert _run(redis_client, lambda s: s.cached(P, ["k0", "k1", "k2"])) == [
        None,
        '{"ok": 1}',
        None,
    ]
    assert _run(redis_client, lambda s: s.cached(P, [])) == []


def test_store_marks_each_input_in_flight_once_with_the_lease_as_ttl(
    redis_client: redis_lib.Redis,
) -> None:
    first = [("k1", Marker(B, 1, "n/1/a").dumps()), ("k2", Marker(B, 2, "n/1/a").dumps())]
    assert _run(redis_client, lambda s: s.mark_in_flight(P, first, 60_000)) == [True, True]
    again = [
        ("k2", Marker("other", 0, "n/2/b").dumps()),
        ("k3", Marker("other", 3, "n/2/b").dumps()),
    ]
    assert _run(redis_client, lambda s: s.mark_in_flight(P, again, 60_000)) == [False, True]
    assert Marker.loads(redis_client.get(keys.inflight(P, "k2"))) == Marker(B, 2, "n/1/a")
    assert 0 < redis_client.pttl(keys.inflight(P, "k1")) <= 60_000
    assert _run(redis_client, lambda s: s.mark_in_flight(P, [], 60_000)) == []


def test_store_in_flight_gives_what_a_takeover_of_a_dead_runners_marker_needs(
    redis_client: redis_lib.Redis,
) -> None:
    dead = Marker(B, 4, "n/3/gone").dumps()
    redis_client.set(keys.inflight(P, "k4"), dead)
    mine = Marker("other", 0, "n/9/me")

    async def take(s: BatchStore) -> list[bool]:
        seen = await s.in_flight(P, ["k4", "k5"])
        leases = RunnerLeases(2.0, ttl_s=600)
        return [await leases.take_marker(s.r, mk, raw, mine, 60_000) for mk, raw in seen]

    assert _run(redis_client, take) == [True, True]  # a dead runner's marker, and none at all
    assert Marker.loads(redis_client.get(keys.inflight(P, "k4"))) == mine


def test_store_clear_in_flight_drops_the_markers_of_put_back_items(
    redis_client: redis_lib.Redis,
) -> None:
    for k in ("k1", "k2", "k3"):
        redis_client.set(keys.inflight(P, k), "x")
    _run(redis_client, lambda s: s.clear_in_flight(P, "k1", "k2"))
    assert [redis_client.exists(keys.inflight(P, k)) for k in ("k1", "k2", "k3")] == [0, 0, 1]


def test_store_settle_caches_results_with_their_ttl_and_drops_done_markers(
    redis_client: redis_lib.Redis,
) -> None:
    for k in ("k1", "k2"):
        redis_client.set(keys.inflight(P, k), "x")
    _run(redis_client, lambda s: s.settle(P, {"k1": '{"r": 1}'}, 30, ["k1", "k2"]))
    assert redis_client.get(keys.cache(P, "k1")) == b'{"r": 1}'
    assert 0 < redis_client.ttl(keys.cache(P, "k1")) <= 30
    assert not redis_client.exists(keys.inflight(P, "k1"), keys.inflight(P, "k2"))
    _run(redis_client, lambda s: s.settle(P, {}, 30, []))  # nothing to do: no round trip


def test_store_counts_attempts_per_item(redis_client: redis_lib.Redis) -> None:
    async def three(s: BatchStore) -> list[int]:
        return [
            await s.count_attempt(B, 3),
            await s.count_attempt(B, 3),
            await s.count_attempt(B, 5),
        ]

    assert _run(redis_client, three) == [1, 2, 1]
    assert redis_client.hget(keys.batch(B, "attempts"), "3") == b"2"


def test_store_dead_letters_failed_items_with_their_input_error_and_traceback(
    redis_client: redis_lib.Redis,
) -> None:
    _create(redis_client, 4)
    errors: dict[int, Any] = {
        1: {"kind": "server_error", "message": "boom", "attempts": 4, "traceback": "tb1"},
        3: {"kind": "internal", "message": "bad", "attempts": 1, "traceback": "tb3"},
    }
    assert _run(redis_client, lambda s: s.dead_letter(B, P, errors)) == 2
    assert _run(redis_client, lambda s: s.dead_letter(B, P, {})) == 0
    entries = {e["id"]: e for e in DeadLetters(redis_client).entries(B)}
    assert set(entries) == {f"{B}:1", f"{B}:3"}
    e = entries[f"{B}:1"]
    assert e["item"] == {"domain": "s1.com"} and e["pipeline"] == P and e["index"] == 1
    assert e["error"] == {"kind": "server_error", "message": "boom"}
    assert (e["attempts"], e["traceback"], e["batch_id"]) == (4, "tb1", B)
    assert isinstance(e["at"], float)


def test_watch_keeps_one_redis_connection_for_the_whole_watch(
    redis_client: redis_lib.Redis,
) -> None:
    _create(redis_client, 3)
    polls: list[Progress] = []
    watchers: set[str] = set()  # the ids of the watch's connections, as Redis lists them

    def seen(p: Progress) -> None:
        polls.append(p)
        clients = redis_client.client_list()
        watchers.update(str(c["id"]) for c in clients if c.get("name") == CLIENT_NAME)
        if len(polls) == 20:  # the batch ends while it is watched
            redis_client.hset(keys.batch(B), mapping={"done": 3, "status": "finished"})

    final = BatchHandle(B).wait(timeout_s=30, interval_s=0.01, on_progress=seen)
    assert final.status == "finished" and len(polls) == 21
    assert len(watchers) == 1, f"{len(watchers)} connections for {len(polls)} polls"
