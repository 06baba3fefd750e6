"""The same breaker scenarios on the Redis store (Lua, server-side), and the cluster-wide
half-open rule with several OS processes racing for the probe."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import uuid

import pytest
import redis as redis_lib
import redis.asyncio as aioredis

from proj.resilience.breaker import BreakerPolicy
from proj.resilience.breaker_store import AsyncAdapter, AsyncRedisBreakerStore, RedisBreakerStore
from tests.breaker_scenarios import SCENARIOS, Scenario


@pytest.mark.parametrize("api", ["asyncio", "sync", "sync-decoded"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_breaker_rule_redis(scenario: Scenario, api: str, redis_client: redis_lib.Redis) -> None:
    url = redis_client.connection_pool.connection_kwargs
    dsn = f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}"
    name = f"dep-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        if api.startswith("sync"):
            sync = redis_lib.Redis.from_url(dsn, decode_responses=api == "sync-decoded")
            try:
                await scenario(AsyncAdapter(RedisBreakerStore(sync)), name)
            finally:
                sync.close()
            return
        client = aioredis.Redis.from_url(dsn)
        try:
            await scenario(AsyncRedisBreakerStore(client), name)
        finally:
            await client.aclose()

    asyncio.run(main())


POLICY = BreakerPolicy(min_calls=1, open_s=0.5, probes=1, probe_lease_s=30)


def _race(dsn: str, name: str, start: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    async def main() -> int:
        import time

        client = aioredis.Redis.from_url(dsn)
        store = AsyncRedisBreakerStore(client)
        while time.time() < start:
            await asyncio.sleep(0.001)
        probes = 0
        for _ in range(200):  # hammer admit through the whole half-open period
            adm = await store.admit(name, POLICY, uuid.uuid4().hex)
            probes += adm.verdict == "probe"
        await client.aclose()
        return probes

    out.put(asyncio.run(main()))


def test_two_workers_cannot_both_probe_in_one_half_open_period(
    redis_client: redis_lib.Redis,
) -> None:
    kw = redis_client.connection_pool.connection_kwargs
    dsn = f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"
    name = f"race-{uuid.uuid4().hex[:8]}"

    async def open_it() -> None:
        client = aioredis.Redis.from_url(dsn)
        await AsyncRedisBreakerStore(client).record(name, POLICY, failed=1)
        await client.aclose()

    asyncio.run(open_it())
    import time

    start = time.time() + 0.6  # just after the breaker may half-open
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [
        mp.get_context("fork").Process(target=_race, args=(dsn, name, start, out)) for _ in range(6)
    ]
    for p in procs:
        p.start()
    probes = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    assert sum(probes) == 1, probes
