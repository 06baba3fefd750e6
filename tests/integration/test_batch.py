"""Batches on real workers and the simulator: progress, dedup, cache, retries, dead letters,
resume after SIGKILL."""

from __future__ import annotations

import signal
import time
from typing import Any

import redis as redis_lib

from proj import batch, keys
from proj.batch.dlq import DeadLetters
from proj.batch.progress_events import PROGRESS_EVENT
from proj.sim.admin import SimAdmin
from proj.sim.config import key_fraction
from tests.support import EventCollector, WorkerPool, wait_until


def _domains(n: int, prefix: str = "d") -> list[dict[str, str]]:
    return [{"domain": f"{prefix}{i}.com"} for i in range(n)]


def test_batch_runs_every_item_once_and_reports_progress(
    workers: WorkerPool,
    sim: SimAdmin,
    provider_env: dict[str, str],
    redis_client: redis_lib.Redis,
    celery_app: Any,
) -> None:
    env = {**provider_env, "PROJ_BATCH_CONCURRENCY": "20"}
    workers.start("bulk", ("bulk",), concurrency=2, env=env)
    sim.configure({"routes": {"company": {"latency_ms": 400}}})  # a few seconds in all
    events = EventCollector(celery_app, PROGRESS_EVENT, "task-succeeded").start()
    seen = []
    try:
        h = batch.submit("company", _domains(300))
        final = h.wait(timeout_s=60, on_progress=seen.append, interval_s=0.1)
        assert (final.total, final.done, final.failed, final.status) == (300, 300, 0, "finished")
        assert any(0 < p.done < 300 for p in seen), "progress moved while it ran"
        results = h.results()
        assert len(results) == 300 and results[7]["domain"] == "d7.com"
        assert sim.count("company") == 300

        def runners_ended() -> bool:  # every runner that reported progress has ended
            ended = {e["uuid"] for e in events.events if e["type"] == "task-succeeded"}
            reported = {e["uuid"] for e in events.events if e["type"] == PROGRESS_EVENT}
            return bool(reported) and reported <= ended

        wait_until(runners_ended, 10, "the runners' task-succeeded events")
    finally:
        events.stop()
    # Progress reached monitors as the runner task's own events (what Flower shows).
    progress = [e for e in events.events if e["type"] == PROGRESS_EVENT]
    assert any(0 < int(e["done"]) < 300 for e in progress), [e["result"] for e in progress]
    last = progress[-1]
    assert (last["batch_id"], last["total"], last["done"], last["pending"]) == (
        h.batch_id,
        300,
        300,
        0,
    )
    assert "300 done" in str(last["result"])
    state = celery_app.events.State()
    for e in events.events:
        state.event(e)
    runner = state.tasks[last["uuid"]]
    assert runner.state == "SUCCESS"  # the progress state gave way to the task's end


def test_same_item_reaches_the_provider_once_within_and_across_batches(
    workers: WorkerPool, sim: SimAdmin, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> None:
    workers.start("bulk", ("bulk",), concurrency=2, env=provider_env)
    items = _domains(20) + _domains(20)  # every item twice in one batch
    first = batch.submit("company", items)
    assert (first.accepted, first.duplicates) == (20, 20)
    first.wait(timeout_s=60)
    assert sim.count("company") == 20
    second = batch.submit("company", _domains(20))  # a new batch, same inputs: the cache
    p = second.wait(timeout_s=60)
    assert (p.done, p.cached) == (20, 20)
    assert sim.count("company") == 20
    again = batch.submit("company", _domains(5), batch_id=first.batch_id)
    assert again.existing  # resubmitting a batch id enqueues nothing
    fresh = batch.submit("company", _domains(20), fresh=True)  # the cache is not read
    p = fresh.wait(timeout_s=60)
    assert (p.done, p.cached) == (20, 0)
    assert sim.count("company") == 40


def test_poison_item_is_dead_lettered_without_delaying_the_rest_and_replays(
    workers: WorkerPool, sim: SimAdmin, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> None:
    env = {
        **provider_env,
        "PROJ_TASK_MAX_RETRIES": "2",
        "PROJ_RETRY_BACKOFF_S": "0.2",
        "PROJ_BREAKER_ENABLED": "false",
    }
    workers.start("bulk", ("bulk",), concurrency=2, env=env)
    # Half of all domains fail every time (by key): one of those is the poison item, the
    # rest are domains that always succeed.
    poison = next(d for d in (f"poison{i}.com" for i in range(200)) if key_fraction(d) < 0.5)
    good = [d for d in (f"good{i}.com" for i in range(400)) if key_fraction(d) >= 0.5][:100]
    sim.configure(
        {"routes": {"company": {"latency_ms": 50, "error_rate": 0.5, "error_by_key": True}}}
    )
    h = batch.submit("company", [{"domain": poison}, *({"domain": d} for d in good)])
    t0 = time.monotonic()
    wait_until(lambda: h.progress().done == 100, 30, "the good items")
    good_done_s = time.monotonic() - t0
    final = h.wait(timeout_s=60)
    assert (final.done, final.failed) == (100, 1)
    assert good_done_s < 10
    entries = DeadLetters(redis_client).entries(h.batch_id)
    assert len(entries) == 1
    e = entries[0]
    assert e["item"] == {"domain": poison} and e["error"]["kind"] == "server_error"
    assert e["attempts"] >= 3 and "Traceback" in e["traceback"]
    # Two passes: 3 attempts (1 + 2 retries) in each.
    assert sim.count("company", "error") == 6

    sim.configure({"routes": {"company": {"latency_ms": 50, "error_rate": 0.0}}})  # fixed
    from proj.batch.replay import replay

    replayed = replay(batch_id=h.batch_id)
    p = replayed.wait(timeout_s=60)
    assert (p.done, p.failed) == (1, 0)
    assert DeadLetters(redis_client).entries(h.batch_id) == []


def test_resume_after_every_worker_is_sigkilled_mid_batch(
    workers: WorkerPool, sim: SimAdmin, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> None:
    env = {**provider_env, "PROJ_BATCH_LEASE_S": "3", "PROJ_BATCH_CONCURRENCY": "20"}
    w1 = workers.start("a", ("bulk",), concurrency=2, env=env)
    w2 = workers.start("b", ("bulk",), concurrency=2, env=env)
    sim.configure({"routes": {"company": {"latency_ms": 100}}})
    h = batch.submit("company", _domains(600, "k"))
    wait_until(lambda: h.progress().done >= 100, 30, "the batch to be under way")
    for w in (w1, w2):
        w.signal_group(signal.SIGKILL)
    for w in (w1, w2):
        w.stop()
    p = h.progress()
    assert p.status == "running" and p.done < 600
    workers.start("c", ("bulk",), concurrency=2, env=env)
    batch.resume(h.batch_id)
    final = h.wait(timeout_s=90)
    assert (final.done, final.failed) == (600, 0)
    results = h.results()
    assert sorted(results) == list(range(600))
    # Each item was stored once; the provider saw each at most twice (killed mid-call).
    ok = sim.count("company", "ok")
    assert 600 <= ok <= 600 + 2 * 20 * 2
    assert int(redis_client.hget(keys.batch(h.batch_id), "done") or 0) == 600
