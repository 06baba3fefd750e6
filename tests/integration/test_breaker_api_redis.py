"""The breakers users get, on a real Redis: pybreaker's behaviour case by case for
``pybreaker.CircuitBreaker`` on :class:`proj.BreakerStorage` and for :class:`proj.Breaker`;
state shared between processes; one probe per open period across processes; no lock held
across guarded calls; ``async def`` functions."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pybreaker
import pytest
import redis as redis_lib

from proj import keys
from proj.guard import registry
from proj.guard.storage import BreakerStorage
from tests.pybreaker_cases import CASES


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def fresh_registry(redis_client: redis_lib.Redis) -> Iterator[None]:
    registry.reset()
    yield
    registry.flush()
    registry.reset()


@pytest.fixture(params=[False, True], ids=["bytes", "decode_responses"])
def storage_client(request: pytest.FixtureRequest, redis_server: Any) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_server.url, decode_responses=request.param)
    yield client
    client.close()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_pybreaker_on_breaker_storage(
    case: Callable[..., None], storage_client: redis_lib.Redis
) -> None:
    name = _name()

    def make(**kwargs: Any) -> pybreaker.CircuitBreaker:
        return pybreaker.CircuitBreaker(
            state_storage=BreakerStorage(name, client=storage_client), **kwargs
        )

    case(make)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_proj_breaker_on_redis(case: Callable[..., None], fresh_registry: None) -> None:
    def make(**kwargs: Any) -> pybreaker.CircuitBreaker:
        kwargs.setdefault("fail_max", 5)
        return registry.breaker(_name(), **kwargs)

    case(make)


def test_breaker_storage_keeps_milliseconds_and_its_keys_in_one_hash(
    redis_client: redis_lib.Redis,
) -> None:
    name = _name()
    storage = BreakerStorage(name)
    cb = pybreaker.CircuitBreaker(fail_max=1, state_storage=storage)
    before = time.time()
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(lambda: 1 / 0)
    after = time.time()
    opened = storage.opened_at
    assert opened is not None and before - 0.002 <= opened.timestamp() <= after + 0.002
    assert redis_client.keys("*" + name + "*") == [keys.breaker(name).encode()]
    assert redis_client.pttl(keys.breaker(name)) > 0


def test_breaker_storage_keeps_its_last_state_when_redis_is_unreachable(
    redis_client: redis_lib.Redis,
) -> None:
    name = _name()
    ok = BreakerStorage(name)
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, state_storage=ok)
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(lambda: 1 / 0)
    assert cb.current_state == "open"
    dead = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    ok._client = dead  # the same storage, its Redis gone
    assert ok.state == "open"  # not pybreaker's fallback of "closed"
    ok.state = "closed"  # a write that cannot land changes nothing shared
    ok._client = redis_client
    assert cb.current_state == "open"


_SHARED = """
import sys, pybreaker, proj
cb = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=30,
                              state_storage=proj.BreakerStorage(sys.argv[1]))
calls = []
try:
    cb.call(lambda: calls.append(1))
    print("called")
except pybreaker.CircuitBreakerError:
    print("refused", cb.current_state, cb.fail_counter, len(calls))
cb.close()
"""


def test_two_processes_share_one_pybreaker_state(redis_client: redis_lib.Redis) -> None:
    name = _name()
    cb = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=30, state_storage=BreakerStorage(name))
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            cb.call(lambda: 1 / 0)
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(lambda: 1 / 0)
    out = subprocess.run(
        [sys.executable, "-c", _SHARED, name],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
        check=True,
    )
    assert out.stdout.split() == ["refused", "open", "3", "0"], out.stderr
    assert cb.current_state == "closed"  # the other process closed it
    assert cb.fail_counter == 0


def _probe_race(url: str, name: str, start: float, out: Any) -> None:
    os.environ["REDIS_URL"] = url
    from proj.guard import registry as reg
    from proj.settings import reset_settings

    reset_settings()
    reg.reset()
    cb = reg.breaker(name, fail_max=1, reset_timeout=0.5)
    ran = 0

    def probe() -> None:
        nonlocal ran
        ran += 1
        time.sleep(0.3)  # the probe is still running when the others arrive
        raise ConnectionError("still down")

    while time.time() < start:
        time.sleep(0.001)
    deadline = time.time() + 1.2  # more than two open periods
    while time.time() < deadline:
        with contextlib.suppress(pybreaker.CircuitBreakerError, ConnectionError):
            cb.call(probe)
        time.sleep(0.005)
    out.put(ran)


@pytest.mark.serial  # eight processes racing for one probe: runs alone (Makefile)
def test_one_probe_per_open_period_across_eight_processes(
    redis_client: redis_lib.Redis, redis_server: Any, fresh_registry: None
) -> None:
    name = _name()
    cb = registry.breaker(name, fail_max=1, reset_timeout=0.5)
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(lambda: 1 / 0)
    start = time.time() + 0.3
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_probe_race, args=(redis_server.url, name, start, out)) for _ in range(8)
    ]
    for p in procs:
        p.start()
    ran = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    probes = int(redis_client.hget(keys.breaker(name), "probes_total") or 0)
    # Each open period admits exactly one probe, cluster-wide: every process together ran
    # as many calls as the store admitted probes, and no more than one per period.
    assert sum(ran) == probes, ran
    assert 1 <= probes <= 3, (probes, ran)


def test_guarded_calls_run_concurrently(fresh_registry: None) -> None:
    """pybreaker holds a lock for the whole call; ten threads meeting inside the guarded
    function would wait on the barrier forever (it times out and breaks) if calls were
    serialised."""
    cb = registry.breaker(_name())
    barrier = threading.Barrier(10, timeout=10)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            cb.call(barrier.wait)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []


def test_async_functions_are_guarded(fresh_registry: None) -> None:
    cb = registry.breaker(_name(), fail_max=2, reset_timeout=30)

    @cb
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async def fail() -> None:
        raise ConnectionError("down")

    async def main() -> None:
        assert await fetch(21) == 42
        assert await cb.call(fetch, 1) == 2
        with pytest.raises(ConnectionError):
            await cb.acall(fail)
        with pytest.raises(pybreaker.CircuitBreakerError):
            await cb.call(fail)
        with pytest.raises(pybreaker.CircuitBreakerError):
            await fetch(1)
        async with cb.acalling():
            pass

    with pytest.raises(pybreaker.CircuitBreakerError):
        asyncio.run(main())
    assert cb.current_state == "open"


def test_an_operator_hold_keeps_a_plain_pybreaker_open(redis_client: redis_lib.Redis) -> None:
    from proj.resilience.breaker_store import RedisBreakerStore

    name = _name()
    cb = pybreaker.CircuitBreaker(reset_timeout=0.1, state_storage=BreakerStorage(name))
    RedisBreakerStore(redis_client).force(name, "forced-open")  # `proj breakers open NAME`
    time.sleep(0.2)
    for _ in range(3):
        with pytest.raises(pybreaker.CircuitBreakerError):
            cb.call(lambda: 1)
    assert cb.current_state == "open"
    RedisBreakerStore(redis_client).force(name, "closed")
    assert cb.call(lambda: 1) == 1


def test_breaker_storage_remembers_what_it_saw_when_redis_goes_away(
    redis_client: redis_lib.Redis,
) -> None:
    name = _name()
    storage = BreakerStorage(name)
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, state_storage=storage)
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(lambda: 1 / 0)
    assert cb.current_state == "open" and storage.opened_at is not None
    storage._client = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    calls: list[int] = []
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(lambda: calls.append(1))  # still open: the opened_at it saw is kept
    assert calls == []
