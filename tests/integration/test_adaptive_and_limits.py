"""Adaptive concurrency and the global rate limit, with real workers and the simulator."""

from __future__ import annotations

import itertools
import json
import time

import redis as redis_lib

from proj import keys
from proj.sim.admin import SimAdmin
from proj.tasks import calls
from tests.support import WorkerPool, wait_until


def _status(r: redis_lib.Redis, node: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(keys.concurrency_status(node)).items()}


def _busiest_second(times: list[float]) -> tuple[int, float]:
    """The most arrivals in any 1 s window, and where that window starts (s after the first)."""
    times = sorted(times)
    best, at, j = 0, 0.0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        if i - j + 1 > best:
            best, at = i - j + 1, times[j] - times[0]
    return best, at


def test_adaptive_worker_settles_near_the_provider_capacity(
    workers: WorkerPool,
    sim: SimAdmin,
    provider_env: dict[str, str],
    redis_client: redis_lib.Redis,
    celery_app: object,
) -> None:
    sim.configure(
        {"routes": {"company": {"latency_ms": 200, "capacity_concurrent": 40, "retry_after_s": 0}}}
    )
    env = {
        **provider_env,
        "PROJ_ADAPTIVE_COOLDOWN_S": "0.5",
        "PROJ_ADAPTIVE_TICK_S": "0.25",
        "PROJ_BREAKER_ENABLED": "false",
    }
    workers.start(
        "adaptive",
        ("bulk",),
        concurrency=5,
        env=env,
        extra_args=("--adaptive", "--adaptive-max", "100"),
    )
    node = workers.nodename("adaptive")
    for i in range(7000):
        calls.company.delay(f"a{i}.com")
    wait_until(
        lambda: int(_status(redis_client, node).get("limit", 0)) >= 38,
        90,
        "the pool to grow toward the capacity",
    )
    # Slow start doubles until the first 429s, then falls back and grows one at a time.
    wait_until(
        lambda: _status(redis_client, node).get("slow_start") == "0", 60, "slow start to end"
    )
    time.sleep(3)  # settle
    before = sim.stats()["counts"]["company"]
    limits = []
    end = time.monotonic() + 8
    while time.monotonic() < end:
        limits.append(int(_status(redis_client, node)["limit"]))
        time.sleep(0.25)
    after = sim.stats()["counts"]["company"]
    ok = after["ok"] - before["ok"]
    limited = after["rate_limited"] - before["rate_limited"]
    assert min(limits) >= 30 and max(limits) <= 50, limits
    assert limited / (ok + limited) < 0.05, (ok, limited)
    # Flower's pool size is the worker's stats, which follow the controller.
    inspect = celery_app.control.inspect(destination=[node], timeout=2)  # type: ignore[attr-defined]
    pool = inspect.stats()[node]["pool"]
    assert abs(pool["max-concurrency"] - int(_status(redis_client, node)["limit"])) <= 1
    assert 2 <= len(pool["processes"]) <= 100
    logs = (workers.log_dir / "adaptive.log").read_text()
    assert "concurrency 5 -> 10: success 100.0% > 95% and work waiting" in logs


def test_global_rate_limit_holds_across_four_workers(
    workers: WorkerPool,
    sim: SimAdmin,
    provider_env: dict[str, str],
    redis_client: redis_lib.Redis,
    celery_app: object,
) -> None:
    sim.configure({"routes": {"company": {"latency_ms": 20}}})
    env = {**provider_env, "PROJ_RATE_LIMITS": json.dumps({"company": "50/s"})}
    # The workers wait on the (empty) urgent queue while this process publishes the backlog (seconds
    # of CPU on a 2-core machine), then all take up `bulk` at once: the provider-side count
    # measures the limiter, not this test competing with the workers for the CPU.
    nodes = [workers.nodename(f"w{n}") for n in range(4)]
    for n in range(4):
        workers.start(f"w{n}", ("urgent",), concurrency=4, env=env)
    for i in range(1400):
        calls.company.delay(f"r{i}.com")
    replies = celery_app.control.add_consumer(  # type: ignore[attr-defined]
        "bulk", destination=nodes, reply=True, timeout=5
    )
    assert len(replies) == 4, replies
    wait_until(lambda: sim.count("company") >= 1300, 60, "the calls to arrive")
    times = sorted(sim.arrivals("company"))
    busiest, at = _busiest_second(times)
    start = times[0] + 3.0  # the achieved rate over 20 s in the middle
    achieved = len([t for t in times if start <= t < start + 20.0]) / 20.0
    print(f"busiest second: {busiest} calls, {at:.2f}s after the first; {achieved:.1f}/s")
    assert busiest <= 50 + 1, f"{busiest} calls in the 1 s from {at:.2f}s"  # rate + burst
    assert achieved >= 0.95 * 50, achieved


def test_retry_after_stops_every_worker(
    workers: WorkerPool, sim: SimAdmin, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> None:
    sim.configure({"routes": {"company": {"latency_ms": 30}}})
    for n in range(4):
        workers.start(f"w{n}", ("bulk",), concurrency=2, env=provider_env)
    for i in range(2000):
        calls.company.delay(f"s{i}.com")
    wait_until(lambda: sim.count("company") >= 100, 30, "steady traffic")
    sim.configure(
        {"routes": {"company": {"latency_ms": 30, "rate_limit_next": 1, "retry_after_s": 2}}}
    )
    wait_until(lambda: sim.count("company", "rate_limited") >= 1, 10, "the 429")
    time.sleep(3.0)
    times = sorted(sim.arrivals("company"))
    stats = sim.stats()
    assert stats["counts"]["company"]["rate_limited"] == 1
    # After the 429, no worker called for about the Retry-After: find that quiet gap.
    gaps = [b - a for a, b in itertools.pairwise(times) if b - a > 1.0]
    assert gaps, "every worker paused"
    gap = max(gaps)
    assert 1.7 <= gap <= 2.6, gap
