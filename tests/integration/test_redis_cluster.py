"""The breaker, the global rate limit and the batch store on a real three-node Redis Cluster
started by the test (``redis-server --cluster-enabled yes``, joined with ``redis-cli
--cluster create``): their scenarios pass as on one Redis, because the keys each script or
transaction touches share a hash tag (:mod:`proj.keys`). Skipped, with the reason, where
``redis-cli`` is not installed."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio.cluster as aiocluster
import redis.cluster

from proj import keys
from proj.batch.store import BatchStore
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
