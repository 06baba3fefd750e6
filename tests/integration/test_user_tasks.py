"""Resilience for the user's own tasks, with real workers: a task with ``breaker=`` against a
failing service, and ``global_rate_limit=`` across workers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis as redis_lib

from proj import keys
from proj.results import states, wait_all
from proj.sim.admin import SimAdmin
from tests.support import WorkerPool, wait_until

pytestmark = pytest.mark.serial  # measures rates or timings: runs alone (Makefile)

ROOT = Path(__file__).resolve().parents[2]
USER = ("-I", "tests.usertasks")


def _env(sim: SimAdmin, **extra: str) -> dict[str, str]:
    return {"USER_API_URL": sim.base_url, "PYTHONPATH": str(ROOT), **extra}


def _state(r: redis_lib.Redis, name: str) -> str:
    return (r.hget(keys.breaker(name), "state") or b"closed").decode()


def test_user_task_breaker_pauses_a_dead_service_and_loses_nothing(
    workers: WorkerPool, sim: SimAdmin, redis_client: redis_lib.Redis, celery_app: object
) -> None:
    from tests import usertasks

    open_s = 1.0
    env = _env(
        sim,
        PROJ_BREAKERS=json.dumps({"payments": {"min_calls": 5, "open_s": open_s, "window_s": 5}}),
    )
    for n in ("u1", "u2"):
        workers.start(n, ("bulk",), concurrency=2, env=env, extra_args=USER, wait=False)
    workers.wait_ready("u1", "u2")
    sim.configure({"routes": {"source": {"latency_ms": 20, "down": True}}})
    n = 40
    results = [usertasks.charge.delay(i) for i in range(n)]
    wait_until(lambda: _state(redis_client, "payments") == "open", 30, "the breaker to open")
    opened = time.time()
    time.sleep(4.0)  # the service stays down: only probes may reach it
    sim.configure({"routes": {"source": {"latency_ms": 20, "down": False}}})
    recovered = time.time()

    # Calls already admitted when it opened may still land in the first 0.3 s.
    down_calls = [t for t in sim.arrivals("source") if opened + 0.3 <= t < recovered]
    periods = (recovered - opened - 0.3) / open_s
    assert len(down_calls) <= int(periods) + 1, (len(down_calls), periods)

    metas = wait_all(results, timeout_s=120)
    assert states(metas) == {"SUCCESS": n}
    assert sorted(m["result"] for m in metas.values()) == list(range(n))
    assert sim.count("source", "ok") == n  # each completed exactly once
    assert _state(redis_client, "payments") == "closed"


def _busiest_second(times: list[float]) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_global_rate_limit_holds_across_workers_for_a_user_task(
    workers: WorkerPool, sim: SimAdmin, redis_client: redis_lib.Redis, celery_app: object
) -> None:
    from tests import usertasks

    env = _env(sim)
    # Both workers wait on the (empty) urgent queue, then take up `bulk` at once.
    for n in ("r1", "r2"):
        workers.start(n, ("urgent",), concurrency=3, env=env, extra_args=USER, wait=False)
    workers.wait_ready("r1", "r2")
    n = 40
    results = [usertasks.sync_contacts.delay(i) for i in range(n)]
    celery_app.control.add_consumer(  # type: ignore[attr-defined]
        "bulk", destination=[WorkerPool.nodename(w) for w in ("r1", "r2")], reply=True
    )
    metas = wait_all(results, timeout_s=120)
    assert states(metas) == {"SUCCESS": n}
    assert len(sim.arrivals("source")) == n
    # Measured where the limit acts, as each task starts: arrivals at the service add the
    # jitter of making the request (a loaded machine bunches them by a tenth of a second).
    starts = [float(m["result"]) for m in metas.values()]
    assert _busiest_second(starts) <= 10 + 1  # the rate, plus one at a window's edge
    assert max(starts) - min(starts) >= (n - 11) / 10  # and the whole run is held to it
    assert redis_client.exists(keys.rate_limit("crm"))


def test_adaptive_worker_hears_user_tasks_and_settles_near_capacity(
    workers: WorkerPool, sim: SimAdmin, redis_client: redis_lib.Redis, celery_app: object
) -> None:
    """A queue of user tasks alone, calling with their own httpx: the controller grows on
    their successes and backs off on the 429s they raise."""
    from tests import usertasks

    sim.configure(
        {"routes": {"source": {"latency_ms": 300, "capacity_concurrent": 15, "retry_after_s": 0}}}
    )
    env = _env(sim, PROJ_ADAPTIVE_COOLDOWN_S="0.5", PROJ_ADAPTIVE_TICK_S="0.25")
    workers.start(
        "adaptive",
        ("bulk",),
        concurrency=5,
        env=env,
        extra_args=(*USER, "--adaptive", "--adaptive-max", "60"),
    )
    node = workers.nodename("adaptive")
    for i in range(3000):
        usertasks.fetch.delay(i)

    def limit() -> int:
        return int(redis_client.hget(keys.concurrency_status(node), "limit") or 0)

    wait_until(lambda: limit() >= 14, 90, "the pool to grow toward the capacity")
    wait_until(
        lambda: redis_client.hget(keys.concurrency_status(node), "slow_start") == b"0",
        60,
        "slow start to end",
    )
    time.sleep(3)
    before = sim.stats()["counts"]["source"]
    limits = []
    end = time.monotonic() + 6
    while time.monotonic() < end:
        limits.append(limit())
        time.sleep(0.25)
    after = sim.stats()["counts"]["source"]
    ok = after["ok"] - before["ok"]
    limited = after["rate_limited"] - before["rate_limited"]
    assert min(limits) >= 8 and max(limits) <= 22, limits  # grew from 5 toward 15
    assert limited / (ok + limited) < 0.05, (ok, limited)
    celery_app.control.purge()  # type: ignore[attr-defined]


def test_worker_without_a_dependency_url_stops_with_one_line(
    workers: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose declared dependency has no base URL or key would fail every task that
    calls it: it refuses to start, and says which variables are missing."""
    payments = {"base_url_env": "PAYMENTS_URL", "key_env": "PAYMENTS_KEY"}
    for var in ("PROVIDER_BASE_URL", "PROVIDER_API_KEY", "PAYMENTS_URL", "PAYMENTS_KEY"):
        monkeypatch.delenv(var, raising=False)  # unset, whatever this shell has
    env = {"PROJ_DEPENDENCIES": json.dumps({"payments": payments})}
    proc = workers.start("nodeps", ("bulk",), env=env, wait=False)
    wait_until(lambda: not proc.alive(), 60, "the worker to exit")
    assert proc.stop() == 1
    log = proc.log_tail()
    assert "error: dependency 'ai': PROVIDER_BASE_URL is not set" in log
    assert (
        "dependency 'payments': PAYMENTS_URL is not set, PAYMENTS_KEY (its key) is not set" in log
    )
    assert "Traceback" not in log
