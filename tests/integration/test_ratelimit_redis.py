"""The same GCRA scenarios on the Redis store (one Lua script on the server)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis as redis_lib
import redis.asyncio as aioredis

from proj.resilience.ratelimit_store import (
    AsyncLimiterAdapter,
    AsyncRedisLimiterStore,
    RedisLimiterStore,
)
from tests.ratelimit_scenarios import SCENARIOS, Scenario


@pytest.mark.parametrize("api", ["asyncio", "sync"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_rate_limit_rule_redis(scenario: Scenario, api: str, redis_client: redis_lib.Redis) -> None:
    kw = redis_client.connection_pool.connection_kwargs
    dsn = f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"
    name = f"dep-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        if api == "sync":
            await scenario(AsyncLimiterAdapter(RedisLimiterStore(redis_client)), name)
            return
        client = aioredis.Redis.from_url(dsn)
        try:
            await scenario(AsyncRedisLimiterStore(client), name)
        finally:
            await client.aclose()

    asyncio.run(main())
