"""The breaker with real workers against the simulator: it opens when the failure rate
passes 20%, only probes reach the provider while it is open, and no task is lost or failed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis as redis_lib

import proj
from proj import keys
from proj.results import states, wait_all
from proj.sim.admin import SimAdmin
from proj.tasks import calls
from tests.support import EventCollector, WorkerPool, wait_until

pytestmark = pytest.mark.serial  # measures rates or timings: runs alone (Makefile)

BREAKER_ENV = {
    "PROJ_BREAKER_MIN_CALLS": "10",
    "PROJ_BREAKER_WINDOW_S": "5",
    "PROJ_BREAKER_OPEN_S": "1.5",
    "PROJ_TASK_MAX_RETRIES": "30",
    "PROJ_RETRY_BACKOFF_MAX_S": "2",
}


def _state(r: redis_lib.Redis, name: str) -> str:
    return (r.hget(keys.breaker(name), "state") or b"closed").decode()


def _probes(r: redis_lib.Redis, name: str) -> int:
    return int(r.hget(keys.breaker(name), "probes_total") or 0)


def test_breaker_opens_pauses_calls_and_no_task_is_lost(
    workers: WorkerPool,
    sim: SimAdmin,
    provider_env: dict[str, str],
    redis_client: redis_lib.Redis,
    celery_app: object,
) -> None:
    env = {**provider_env, **BREAKER_ENV}
    workers.start("w1", ("bulk",), concurrency=4, env=env, wait=False)
    workers.start("w2", ("bulk",), concurrency=4, env=env, wait=False)
    workers.wait_ready("w1", "w2")
    events = EventCollector(celery_app, "proj-breaker-state").start()
    sim.configure({"routes": {"company": {"latency_ms": 40}}})
    n = 300
    results = [calls.company.delay(f"firm{i}.com") for i in range(n)]
    wait_until(lambda: sim.count("company", "ok") >= 30, 30, "traffic to start")

    failing_since = time.monotonic()
    sim.configure({"routes": {"company": {"latency_ms": 40, "error_rate": 0.4}}})
    wait_until(lambda: _state(redis_client, "company") == "open", 10, "the breaker to open")
    opened_after = time.monotonic() - failing_since
    assert opened_after < 5.0 + 1.0, "opens within one window"

    # For 5 s at 40% failures, the breaker cycles: open, one probe, closed or open again.
    # Sample it every 20 ms: over every stretch where it stayed open and admitted no probe
    # (after a 0.25 s grace from each opening for calls already admitted), the provider
    # must see no call at all.
    leaked, open_stretches, probes_seen = 0, 0.0, 0
    last = (
        _state(redis_client, "company"),
        _probes(redis_client, "company"),
        sim.count("company"),
        time.monotonic(),
    )
    opened_at = {redis_client.hget(keys.breaker("company"), "opened_at_ms")}
    grace_until = time.monotonic() + 0.25
    end = time.monotonic() + 5.0
    while time.monotonic() < end:
        time.sleep(0.02)
        opened = redis_client.hget(keys.breaker("company"), "opened_at_ms")
        now = (
            _state(redis_client, "company"),
            _probes(redis_client, "company"),
            sim.count("company"),
            time.monotonic(),
        )
        if opened not in opened_at:
            opened_at.add(opened)
            grace_until = now[3] + 0.25
        if last[0] == now[0] == "open" and last[1] == now[1] and last[3] >= grace_until:
            leaked += now[2] - last[2]
            open_stretches += now[3] - last[3]
        probes_seen += now[1] - last[1]
        last = now
    assert open_stretches > 1.0, "the breaker spent time open"
    assert probes_seen >= 1
    assert leaked == 0, f"{leaked} calls reached the provider while the breaker was open"

    sim.configure({"routes": {"company": {"latency_ms": 40, "error_rate": 0.0}}})
    wait_until(lambda: _state(redis_client, "company") == "closed", 15, "the breaker to close")
    metas = wait_all(results, timeout_s=120)
    assert states(metas) == {"SUCCESS": n}
    out = [m["result"] for m in metas.values()]
    assert sim.count("company", "ok") == n  # each task completed exactly once
    assert {o["domain"] for o in out} == {f"firm{i}.com" for i in range(n)}

    # Every state change was logged by the process that caused it, and sent as an event.
    events.stop()
    changes = [(e["old_state"], e["new_state"]) for e in events.events if e["breaker"] == "company"]
    assert ("closed", "open") in changes and ("half-open", "closed") in changes
    logs = "".join(p.read_text() for p in workers.log_dir.glob("*.log"))
    assert "breaker company: closed -> open" in logs
    assert "breaker company: half-open -> closed" in logs


def test_burst_of_429s_does_not_open_the_breaker(
    workers: WorkerPool, sim: SimAdmin, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> None:
    env = {**provider_env, **BREAKER_ENV}
    workers.start("w1", ("bulk",), concurrency=4, env=env)
    sim.configure(
        {"routes": {"company": {"latency_ms": 20, "capacity_rps": 10, "retry_after_s": 1}}}
    )
    results = [calls.company.delay(f"co{i}.com") for i in range(120)]
    metas = wait_all(results, timeout_s=120)
    assert sim.count("company", "rate_limited") >= 10
    assert _state(redis_client, "company") == "closed"
    assert states(metas) == {"SUCCESS": 120}


def test_guarded_calls_from_threads_run_concurrently(
    sim: SimAdmin,
    provider_env: dict[str, str],
    redis_client: redis_lib.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten threads, each a guarded call of 0.2 s through one breaker: the provider sees all
    ten at once (pybreaker's lock would let one through at a time)."""
    from proj.provider import runtime
    from proj.settings import reset_settings

    for k, v in provider_env.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    runtime.reset_runtime()
    try:
        base = provider_env["PROVIDER_BASE_URL"]

        def call(i: int) -> object:
            return runtime.run(
                lambda p: p.company.get_json(f"{base}/v1/companies/t{i}.com?delay_ms=200")
            )

        runtime.run(lambda p: p.company.get_json(f"{base}/v1/companies/warm.com"))
        sim.reset()
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(call, range(10)))
        assert sim.stats()["max_in_flight"]["company"] == 10
        cb = proj.breaker("company")
        cb.flush()
        assert cb.metrics().calls == 11  # every call went through the breaker
    finally:
        runtime.reset_runtime()
        monkeypatch.undo()
        reset_settings()
