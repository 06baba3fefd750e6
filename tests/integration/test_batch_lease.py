"""Runner leases on a real Redis, one test per rule: who joins, who is dead, who adopts a batch
whose runners died, whose in-flight marker may be taken over."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
import redis as redis_lib
import redis.asyncio as aioredis

from proj import keys
from proj.batch.lease import LAST_STEP, LAST_STEP_TRIES, Marker, RunnerLeases
from proj.batch.submit import reconnect_delay_s

T = TypeVar("T")
LEASE_S = 2.0
B = "b-lease"


@pytest.fixture
def leases() -> RunnerLeases:
    return RunnerLeases(LEASE_S, ttl_s=600)


@pytest.fixture
def batch(redis_client: redis_lib.Redis) -> str:
    """A running batch of 10 items, all leased for a minute, that wants 1 runner."""
    redis_client.hset(keys.batch(B), mapping={"status": "running", "runners": 1, "urgent": 0})
    redis_client.zadd(keys.batch(B, "leases"), {str(i): 2**42 for i in range(10)})
    return B


def _run(redis_url: str, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await fn(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def _url(client: redis_lib.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def _now_ms(client: redis_lib.Redis) -> float:
    s, us = client.time()
    return s * 1000 + us / 1000


def _released(client: redis_lib.Redis) -> bool:
    scored: list[tuple[bytes, float]] = client.zrange(  # type: ignore[assignment]
        keys.batch(B, "leases"), 0, -1, withscores=True
    )
    return all(s == 0 for _, s in scored)


def test_join_a_runner_beyond_the_batchs_runners_is_surplus(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    url = _url(redis_client)
    assert _run(url, lambda r: leases.join(r, batch, "n/1/a")) == 1
    assert _run(url, lambda r: leases.join(r, batch, "n/1/b")) == 0
    assert _run(url, lambda r: leases.join(r, batch, "n/1/c", forced=True)) == 1  # resume
    assert not _released(redis_client)  # nobody died


def test_join_replacing_a_runner_that_still_holds_its_lease_releases_the_items(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    url = _url(redis_client)
    _run(url, lambda r: leases.join(r, batch, "n/1/a"))
    assert _run(url, lambda r: leases.join(r, batch, "n/1/b", replaces="n/1/a")) == 1
    assert _released(redis_client)  # what "a" left in flight runs again


def test_join_a_finished_batch_is_refused(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    redis_client.hset(keys.batch(batch), mapping={"status": "finished", "finalized": 1})
    assert _run(_url(redis_client), lambda r: leases.join(r, batch, "n/1/a")) == -1


def test_a_finished_batch_whose_last_step_never_ran_is_adopted_and_run_by_one_runner(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    url = _url(redis_client)
    _run(url, lambda r: leases.join(r, batch, "n/1/a"))
    redis_client.hset(keys.batch(batch), "status", "finished")  # then n/1/a died in the last step
    assert _run(url, lambda r: leases.join(r, batch, "n/2/b")) == 0  # n/1/a is at it, still
    redis_client.zadd(keys.batch(batch, "runners"), {"n/1/a": 1})  # its lease lapsed
    redis_client.zadd(keys.BATCH_LEASES, {batch: 1})
    assert leases.orphans(redis_client) == [batch]
    assert leases.adopt(redis_client, batch) == (1, False, 1)  # one runner, for the last step
    assert _run(url, lambda r: leases.join(r, batch, "n/2/b")) == LAST_STEP
    assert _run(url, lambda r: leases.join(r, batch, "n/2/c")) == 0  # one runs it
    _run(url, lambda r: leases.leave(r, batch, "n/2/b", orphaned=False))
    assert redis_client.zscore(keys.BATCH_LEASES, batch)  # it failed: still watched
    assert _run(url, lambda r: leases.join(r, batch, "n/2/c")) == LAST_STEP
    redis_client.hset(keys.batch(batch), "finalized", 1)
    _run(url, lambda r: leases.leave(r, batch, "n/2/c", orphaned=False))
    assert redis_client.zscore(keys.BATCH_LEASES, batch) is None  # done: no longer watched


def test_heartbeat_finds_a_dead_runner_and_releases_the_items(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    url = _url(redis_client)
    redis_client.hset(keys.batch(batch), "runners", 2)
    _run(url, lambda r: leases.join(r, batch, "n/1/live"))
    redis_client.zadd(keys.batch(batch, "runners"), {"n/2/dead": 1})  # its lease lapsed
    assert _run(url, lambda r: leases.heartbeat(r, batch, "n/1/live")) == (False, 1)
    assert _released(redis_client)
    assert redis_client.zrange(keys.batch(batch, "runners"), 0, -1) == [b"n/1/live"]


def test_adopt_exactly_one_of_many_watchdogs_wins(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    redis_client.hset(keys.batch(batch), "runners", 2)
    redis_client.zadd(keys.BATCH_LEASES, {batch: 1})  # its runners' leases lapsed long ago
    url = _url(redis_client)

    def one(_: int) -> object:
        client = redis_lib.Redis.from_url(url)
        try:
            return leases.adopt(client, batch)
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        won = [r for r in pool.map(one, range(16)) if r is not None]
    assert won == [(2, False, 1)]
    assert _released(redis_client)
    due = redis_client.zscore(keys.BATCH_LEASES, batch)
    assert due is not None and due > _now_ms(redis_client) + LEASE_S * 1000 * 0.5


def test_adopt_again_in_a_row_doubles_the_grace(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    for times in (1, 2, 3):
        redis_client.zadd(keys.BATCH_LEASES, {batch: 1})
        redis_client.hset(keys.batch(batch), "watch_at", 1)  # the last adoption's grace lapsed
        adopted = leases.adopt(redis_client, batch)
        assert adopted is not None and adopted[2] == times
        grace_ms = redis_client.zscore(keys.BATCH_LEASES, batch) - _now_ms(redis_client)  # type: ignore[operator]
        assert (
            LEASE_S * 1000 * 2 ** (times - 1) * 0.9 < grace_ms <= LEASE_S * 1000 * 2 ** (times - 1)
        )


def test_adopt_leaves_a_batch_with_a_live_runner_alone(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    _run(_url(redis_client), lambda r: leases.join(r, batch, "n/1/a"))
    redis_client.zadd(keys.BATCH_LEASES, {batch: 1})  # a stale index entry
    assert leases.adopt(redis_client, batch) is None
    assert not _released(redis_client)


def test_adopt_drops_a_finished_batch_from_the_index(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    redis_client.hset(keys.batch(batch), mapping={"status": "finished", "finalized": 1})
    redis_client.zadd(keys.BATCH_LEASES, {batch: 1})
    assert leases.orphans(redis_client) == [batch]
    assert leases.adopt(redis_client, batch) is None
    assert leases.orphans(redis_client) == []


def test_expected_runners_get_a_grace_a_stale_index_entry_does_not_cut_short(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    _run(_url(redis_client), lambda r: leases.expect(r, batch, 2))
    due = redis_client.zscore(keys.BATCH_LEASES, batch)
    assert due is not None and due > _now_ms(redis_client) + LEASE_S * 1000 * 0.5
    redis_client.zadd(keys.BATCH_LEASES, {batch: 1})  # the watchdog looks too early
    assert leases.adopt(redis_client, batch) is None
    assert not _released(redis_client)
    assert redis_client.zscore(keys.BATCH_LEASES, batch) == due  # the hint is right again


def test_a_heartbeat_writes_a_running_batch_back_into_the_index(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    url = _url(redis_client)
    _run(url, lambda r: leases.join(r, batch, "n/1/a"))
    redis_client.zrem(keys.BATCH_LEASES, batch)  # the hint was lost
    _run(url, lambda r: leases.heartbeat(r, batch, "n/1/a"))
    due = redis_client.zscore(keys.BATCH_LEASES, batch)
    assert due is not None and due > _now_ms(redis_client)


def test_a_finished_batch_leaves_the_index_when_its_last_runner_leaves(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    url = _url(redis_client)
    _run(url, lambda r: leases.join(r, batch, "n/1/a"))
    _run(url, lambda r: leases.leave(r, batch, "n/1/a", orphaned=False))
    assert redis_client.zscore(keys.BATCH_LEASES, batch)  # running: still watched
    _run(url, lambda r: leases.join(r, batch, "n/1/b"))
    redis_client.hset(keys.batch(batch), mapping={"status": "finished", "finalized": 1})
    _run(url, lambda r: leases.leave(r, batch, "n/1/b", orphaned=False))
    assert redis_client.zscore(keys.BATCH_LEASES, batch) is None


def test_marker_of_a_live_runner_is_kept_and_of_a_dead_one_taken(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    url = _url(redis_client)
    _run(url, lambda r: leases.join(r, batch, "n/1/live"))
    mk = keys.inflight("company", "k1")
    mine = Marker("other", 0, "n/9/me")
    live = Marker(batch, 3, "n/1/live").dumps()
    redis_client.set(mk, live)
    assert not _run(url, lambda r: leases.take_marker(r, mk, live, mine, 60_000))
    dead = Marker(batch, 3, "n/2/gone").dumps()
    redis_client.set(mk, dead)
    assert _run(url, lambda r: leases.take_marker(r, mk, dead, mine, 60_000))
    assert Marker.loads(redis_client.get(mk)) == mine
    assert not _run(url, lambda r: leases.take_marker(r, mk, dead, mine, 60_000))  # changed


def test_marker_that_names_no_runner_is_waited_out(
    redis_client: redis_lib.Redis, leases: RunnerLeases, batch: str
) -> None:
    mk = keys.inflight("company", "k2")
    redis_client.set(mk, f"{batch}:4")
    mine = Marker("other", 0, "n/9/me")
    assert not _run(_url(redis_client), lambda r: leases.take_marker(r, mk, f"{batch}:4", mine, 1))


def test_reconnect_delay_doubles_from_the_poll_interval_up_to_its_cap() -> None:
    assert [reconnect_delay_s(f, 0.25) for f in (1, 2, 3, 4, 5)] == [0.25, 0.5, 1.0, 2.0, 2.0]


def test_a_last_step_that_fails_every_time_is_given_up_after_its_tries(
    redis_client: redis_lib.Redis,
    leases: RunnerLeases,
    batch: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = _url(redis_client)
    redis_client.hset(keys.batch(batch), "status", "finished")  # its last step never ran
    for n in range(1, LAST_STEP_TRIES + 1):
        redis_client.hdel(keys.batch(batch), "watch_at")  # the last grace lapsed
        redis_client.zadd(keys.BATCH_LEASES, {batch: 1})
        assert leases.adopt(redis_client, batch) == (1, False, n)
        runner = f"n/{n}/a"
        assert _run(url, lambda r, runner=runner: leases.join(r, batch, runner)) == LAST_STEP
        redis_client.zadd(keys.batch(batch, "runners"), {runner: 1})  # and died in it
    redis_client.hdel(keys.batch(batch), "watch_at")
    redis_client.zadd(keys.BATCH_LEASES, {batch: 1})
    assert leases.adopt(redis_client, batch) is None
    assert redis_client.hget(keys.batch(batch), "last_step_failed") is not None
    assert redis_client.zscore(keys.BATCH_LEASES, batch) is None  # no longer watched
    assert _run(url, lambda r: leases.join(r, batch, "n/9/a")) == -1
    assert any("failed 5 times in a row; given up" in r.getMessage() for r in caplog.records)
