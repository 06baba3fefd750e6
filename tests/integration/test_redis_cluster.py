"""Every store proj keeps in Redis on a real three-node Redis Cluster started by the test
(``redis-server --cluster-enabled yes``, joined with ``redis-cli --cluster create``): the
breaker, the global rate limit, a batch's store with its result cache and in-flight markers,
runner leases and adoption, parked tasks, the dead letters and the quarantine pass as on one
Redis, because the keys each script or transaction touches share a hash tag (:mod:`proj.keys`)
and what spans slots is written by single-key commands. Skipped, with the reason, where
``redis-cli`` is not installed."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
import redis.asyncio.cluster as aiocluster
import redis.cluster

from proj import keys
from proj.batch import dlq as dlq_lib
from proj.batch.dlq import DeadLetters
from proj.batch.lease import Marker, RunnerLeases
from proj.batch.store import BatchStore
from proj.parking import Parking
from proj.quarantine import Quarantine
from proj.resilience.breaker_store import AsyncAdapter, AsyncRedisBreakerStore, RedisBreakerStore
from proj.resilience.ratelimit_store import (
    AsyncLimiterAdapter,
    AsyncRedisLimiterStore,
    RedisLimiterStore,
)
from proj.stack.procs import ManagedProcess, free_port
from proj.stack.redis_server import find_redis_server
from tests import breaker_scenarios, ratelimit_scenarios
from tests.support import wait_until

pytestmark = pytest.mark.slow
T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed (Debian: redis-tools): no cluster to make")
    base = tmp_path_factory.mktemp("cluster")
    ports = [_node_port() for _ in range(3)]
    procs = []
    for port in ports:
        d = base / str(port)
        d.mkdir()
        argv = [
            str(find_redis_server()), "--port", str(port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
            "--dir", str(d), "--save", "", "--appendonly", "no",
        ]  # fmt: skip
        procs.append(ManagedProcess(f"redis-{port}", argv, log_path=d / "redis.log").start())
    try:
        nodes = [f"127.0.0.1:{p}" for p in ports]
        wait_until(lambda: all(_answers(p) for p in ports), 30, "the cluster's nodes")
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        wait_until(lambda: all(_ok(p) for p in ports), 30, "cluster_state:ok")
        yield ports[0]
    finally:
        for proc in procs:
            proc.stop(timeout_s=10)


def _node_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    import socket

    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _ok(port: int) -> bool:
    info = redis.Redis(port=port, socket_timeout=1).cluster("info")
    text = info if isinstance(info, str) else str(info)
    return "cluster_state:ok" in text or (
        isinstance(info, dict) and info.get("cluster_state") == "ok"
    )


def test_the_keys_of_one_script_share_a_slot() -> None:
    from redis.crc import key_slot

    name, batch = "payments", "b123"
    assert (
        len(
            {
                key_slot(k.encode())
                for k in (keys.breaker(name), keys.breaker_window(name), keys.breaker_probes(name))
            }
        )
        == 1
    )
    parts = [keys.batch(batch), *(keys.batch(batch, p) for p in keys.BATCH_PARTS)]
    assert len({key_slot(k.encode()) for k in parts}) == 1


def _on_cluster(
    port: int,
    api: str,
    with_sync: Callable[[Any], Awaitable[None]],
    with_async: Callable[[Any], Awaitable[None]],
) -> None:
    """Run ``with_sync`` on a sync cluster client or ``with_async`` on an asyncio one (by
    ``api``), the client closed after."""

    async def main() -> None:
        if api == "sync":
            client = redis.cluster.RedisCluster(host="127.0.0.1", port=port)
            try:
                await with_sync(client)
            finally:
                client.close()
            return
        aclient = aiocluster.RedisCluster(host="127.0.0.1", port=port)
        try:
            await with_async(aclient)
        finally:
            await aclient.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("api", ["asyncio", "sync"])
@pytest.mark.parametrize("scenario", breaker_scenarios.SCENARIOS, ids=lambda s: s.__name__)
def test_breaker_rules_on_a_cluster(
    scenario: breaker_scenarios.Scenario, api: str, cluster_port: int
) -> None:
    name = f"dep-{uuid.uuid4().hex[:8]}"

    async def on_sync(client: Any) -> None:
        store = RedisBreakerStore(client)
        await scenario(AsyncAdapter(store), name)
        assert name in store.names()  # found by scanning every node

    async def on_async(client: Any) -> None:
        await scenario(AsyncRedisBreakerStore(client), name)

    _on_cluster(cluster_port, api, on_sync, on_async)


@pytest.mark.parametrize("api", ["asyncio", "sync"])
@pytest.mark.parametrize("scenario", ratelimit_scenarios.SCENARIOS, ids=lambda s: s.__name__)
def test_rate_limit_rules_on_a_cluster(
    scenario: ratelimit_scenarios.Scenario, api: str, cluster_port: int
) -> None:
    name = f"dep-{uuid.uuid4().hex[:8]}"

    async def on_sync(client: Any) -> None:
        await scenario(AsyncLimiterAdapter(RedisLimiterStore(client)), name)

    async def on_async(client: Any) -> None:
        await scenario(AsyncRedisLimiterStore(client), name)

    _on_cluster(cluster_port, api, on_sync, on_async)


def test_a_batch_is_created_claimed_completed_and_finished_on_a_cluster(cluster_port: int) -> None:
    async def main() -> None:
        r = aiocluster.RedisCluster(host="127.0.0.1", port=cluster_port)
        try:
            store = BatchStore(r, ttl_s=600)  # type: ignore[arg-type]
            bid = f"b{uuid.uuid4().hex[:8]}"
            items = [{"domain": f"c{i}.com", "priority": i % 3} for i in range(10)]
            assert await store.create(
                bid,
                "company",
                items,
                [f"k{i}" for i in range(10)],
                duplicates=0,
                urgent=False,
                now=time.time(),
            )
            claimed = await store.claim(bid, 10, lease_s=30)
            assert claimed[:4] == [2, 5, 8, 1]  # priorities kept on a cluster too
            loaded = await store.load(bid, claimed)
            assert len(loaded) == 10
            await store.complete(bid, [(i, "done", json.dumps({"ok": i})) for i in claimed])
            assert await store.finish(bid)
            p = await store.progress(bid)
            assert p is not None and (p.done, p.status) == (10, "finished")
            assert sorted((await store.results(bid)).keys()) == list(range(10))
        finally:
            await r.aclose()

    asyncio.run(main())


def _sync(port: int) -> redis.cluster.RedisCluster:
    return redis.cluster.RedisCluster(host="127.0.0.1", port=port)


def _both(port: int, fn: Callable[[redis.cluster.RedisCluster], T]) -> list[T]:
    """``fn`` run by two callers at once, each with its own cluster client."""

    def one(_: int) -> T:
        client = _sync(port)
        try:
            return fn(client)
        finally:
            client.close()

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, range(2)))


def test_the_keys_of_each_store_share_a_slot() -> None:
    from redis.crc import key_slot

    def slots(*names: str) -> int:
        return len({key_slot(k.encode()) for k in names})

    assert slots(keys.DLQ, keys.DLQ_INDEX) == 1
    assert slots(keys.QUARANTINE, keys.QUARANTINE_INDEX, keys.QUARANTINE_COUNTS) == 1
    assert slots(*(keys.parked("breaker:ai", p) for p in (None, "msgs", "moving"))) == 1


def test_dead_letters_are_kept_taken_once_restored_and_dropped_on_a_cluster(
    cluster_port: int,
) -> None:
    client = _sync(cluster_port)
    try:
        dlq = DeadLetters(client)  # type: ignore[arg-type]
        bid = f"b{uuid.uuid4().hex[:8]}"
        err = {"kind": "permanent", "message": "no", "attempts": 3}
        dlq.add([dlq_lib.entry(bid, "company", i, {"domain": f"d{i}.com"}, err) for i in range(3)])

        async def more(r: Any) -> None:  # the runner's way in, on an asyncio cluster client
            await dlq_lib.add_async(r, [dlq_lib.entry(bid, "company", 3, None, err)])

        _on_cluster(cluster_port, "asyncio", more, more)
        ids = [e["id"] for e in dlq.entries(bid)]
        assert sorted(ids) == [f"{bid}:{i}" for i in range(4)]
        taken = _both(cluster_port, lambda c: DeadLetters(c).take(ids))  # type: ignore[arg-type]
        assert sorted(e["id"] for part in taken for e in part) == sorted(ids)  # each once
        assert dlq.entries(bid) == []
        dlq.restore([e for part in taken for e in part])
        assert dlq.get(f"{bid}:0")["item"] == {"domain": "d0.com"}  # type: ignore[index]
        assert dlq.purge(bid) == 4 and dlq.entries(bid) == []
    finally:
        client.close()


def test_quarantine_keeps_its_bounds_on_a_cluster(cluster_port: int) -> None:
    client = _sync(cluster_port)
    try:
        client.delete(keys.QUARANTINE, keys.QUARANTINE_INDEX, keys.QUARANTINE_COUNTS)
        q = Quarantine(client, max_entries=3, ttl_s=60)  # type: ignore[arg-type]
        now = time.time()
        q.add({"id": "old", "at": now - 120, "kind": "body", "body": ""})  # past its TTL
        for i in range(4):
            q.add({"id": f"q{i}", "at": now + i, "kind": "header", "body": ""})
        assert [e["id"] for e in q.oldest()] == ["q1", "q2", "q3"]  # the oldest went first
        assert q.count() == 3 and q.counts() == {"body": 1, "header": 4}
    finally:
        client.close()


def test_parked_messages_are_claimed_released_and_recovered_on_a_cluster(
    cluster_port: int,
) -> None:
    client = _sync(cluster_port)
    try:
        store = Parking(client)  # type: ignore[arg-type]
        lot = f"breaker:{uuid.uuid4().hex[:8]}"
        now = time.time()
        first = store.park(lot, now - 1, '{"task": "a"}')
        store.park(lot, now - 1, '{"task": "b"}')
        store.park(lot, now + 3600, '{"task": "later"}')
        assert lot in store.lots() and store.counts()[lot] == 3
        claimed = store.claim(lot, now, 10, lease_s=0.001)
        assert sorted(m for _, m in claimed) == ['{"task": "a"}', '{"task": "b"}']
        assert store.recover(lot, now + 1) == 2  # the mover died: its claims lapse
        claimed = store.claim(lot, now + 1, 10, lease_s=60)
        store.release(lot, [i for i, _ in claimed if i == first])
        store.unclaim(lot, [i for i, _ in claimed if i != first], now)
        assert [m for _, m in store.claim(lot, now + 1, 10, lease_s=60)] == ['{"task": "b"}']
        store.drop_empty(lot)  # not empty: kept
        assert lot in store.lots()
        client.delete(keys.parked(lot, "msgs"))
        store.drop_empty(lot)
        assert lot not in store.lots()
    finally:
        client.close()


def test_runner_leases_and_adoption_on_a_cluster(cluster_port: int) -> None:
    lease_s = 2.0
    leases = RunnerLeases(lease_s, ttl_s=600)
    bid = f"b{uuid.uuid4().hex[:8]}"
    client = _sync(cluster_port)
    client.hset(keys.batch(bid), mapping={"status": "running", "runners": 1, "urgent": 0})
    client.zadd(keys.batch(bid, "leases"), {str(i): 2**42 for i in range(4)})

    def released() -> bool:
        return all(
            s == 0 for _, s in client.zrange(keys.batch(bid, "leases"), 0, -1, withscores=True)
        )

    async def runners(r: Any) -> None:
        await leases.expect(r, bid, 1)
        assert await leases.join(r, bid, "n/1/a") == 1
        assert await leases.join(r, bid, "n/1/b") == 0  # surplus
        assert await leases.heartbeat(r, bid, "n/1/a") == (False, 0)
        mk = keys.inflight("company", uuid.uuid4().hex)
        live, mine = Marker(bid, 1, "n/1/a").dumps(), Marker("other", 0, "n/9/me")
        await r.set(mk, live)
        assert not await leases.take_marker(r, mk, live, mine, 60_000)  # its runner is alive
        await leases.leave(r, bid, "n/1/a", orphaned=True)
        assert await leases.take_marker(r, mk, live, mine, 60_000)  # now it is not
        assert not await leases.take_marker(r, mk, live, mine, 60_000)  # changed since read

    try:
        _on_cluster(cluster_port, "asyncio", runners, runners)
        assert released()
        assert client.zscore(keys.BATCH_LEASES, bid)  # the index holds the batch
        client.zadd(keys.batch(bid, "leases"), {str(i): 2**42 for i in range(4)})
        client.zadd(keys.BATCH_LEASES, {bid: 1})  # due now
        assert bid in leases.orphans(client, limit=1000)
        won = [a for a in _both(cluster_port, lambda c: leases.adopt(c, bid)) if a is not None]
        assert won == [(1, False, 1)] and released()
        assert bid not in leases.orphans(client, limit=1000)  # its new grace
        client.zadd(keys.BATCH_LEASES, {bid: 1})  # a stale hint: the grace still holds
        assert leases.adopt(client, bid) is None
        client.hset(keys.batch(bid), mapping={"status": "finished", "finalized": 1})
        _on_cluster(cluster_port, "asyncio", _leave(leases, bid), _leave(leases, bid))
        assert client.zscore(keys.BATCH_LEASES, bid) is None  # done: left the index
    finally:
        client.close()


def _leave(leases: RunnerLeases, bid: str) -> Callable[[Any], Awaitable[None]]:
    async def leave(r: Any) -> None:
        await leases.leave(r, bid, "n/1/last", orphaned=False)

    return leave


def test_the_result_cache_and_in_flight_markers_on_a_cluster(cluster_port: int) -> None:
    p = f"p{uuid.uuid4().hex[:8]}"
    ks = [f"k{i}" for i in range(6)]  # keys in several slots

    async def steps(r: Any) -> None:
        store = BatchStore(r, ttl_s=600)
        await store.settle(p, {"k0": '{"r": 0}', "k1": '{"r": 1}'}, 60, [])
        assert await store.cached(p, ks[:3]) == ['{"r": 0}', '{"r": 1}', None]
        marks = [(k, Marker("b", i, "n/1/a").dumps()) for i, k in enumerate(ks)]
        assert await store.mark_in_flight(p, marks, 60_000) == [True] * 6
        assert await store.mark_in_flight(p, marks[:2], 60_000) == [False, False]
        seen = await store.in_flight(p, ks)
        assert [Marker.loads(v) for _, v in seen] == [Marker("b", i, "n/1/a") for i in range(6)]
        await store.clear_in_flight(p, "k0", "k1", "k2")
        await store.settle(p, {"k3": '{"r": 3}'}, 60, ["k3", "k4"])
        assert [v for _, v in await store.in_flight(p, ks)] == [None] * 5 + [seen[5][1]]
        assert (await store.cached(p, ["k3"]))[0] == '{"r": 3}'

    _on_cluster(cluster_port, "asyncio", steps, steps)
