"""Batches heal themselves: a runner's worker SIGKILLed mid-batch, ``proj batch resume`` of a
batch whose in-flight markers name a dead runner, and ``proj submit``'s watcher through a Redis
restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis as redis_lib

from proj import batch, keys
from proj.batch.lease import Marker
from proj.sim.admin import SimAdmin
from proj.stack.redis_server import RedisServer
from tests.support import WorkerPool, wait_until

PROJ = str(Path(sys.executable).parent / "proj")


def _domains(n: int, prefix: str) -> list[dict[str, str]]:
    return [{"domain": f"{prefix}{i}.com"} for i in range(n)]


def _runner_nodes(client: redis_lib.Redis, batch_id: str) -> set[str]:
    """The worker nodes of the batch's runners that hold a lease now."""
    runners = client.zrange(keys.batch(batch_id, "runners"), 0, -1)
    return {r.decode().split("/")[0] for r in runners}  # type: ignore[union-attr]


def _markers(client: redis_lib.Redis) -> list[Marker]:
    found = [client.get(k) for k in client.scan_iter(keys.inflight("company", "*"))]
    return [m for m in (Marker.loads(v) for v in found) if m is not None]


def _batch_on_a_doomed_worker(
    workers: WorkerPool,
    sim: SimAdmin,
    provider_env: dict[str, str],
    n: int,
    prefix: str,
    *,
    watchdog_s: str,
    latency_ms: int,
    done_at: int,
) -> tuple[dict[str, str], batch.BatchHandle]:
    """A company batch of ``n`` running on a worker called ``doomed`` (runner leases of 2 s),
    once ``done_at`` items are done; returns the workers' environment and the batch."""
    env = {
        **provider_env,
        "PROJ_BATCH_CONCURRENCY": "20",
        "PROJ_BATCH_RUNNER_LEASE_S": "2",
        "PROJ_BATCH_WATCHDOG_INTERVAL_S": watchdog_s,
    }
    workers.start("doomed", ("bulk",), concurrency=2, env=env)
    sim.configure({"routes": {"company": {"latency_ms": latency_ms}}})
    h = batch.submit("company", _domains(n, prefix))
    wait_until(lambda: h.progress().done >= done_at, 30, "the batch to be under way")
    return env, h


def _sigkill(workers: WorkerPool, name: str) -> None:
    """SIGKILL a worker and its pool, as the OOM killer would."""
    proc = next(p for p in workers.procs if p.name == name)
    proc.signal_group(signal.SIGKILL)
    proc.stop()


def test_batch_heals_without_a_command_after_its_runners_worker_is_sigkilled(
    workers: WorkerPool,
    sim: SimAdmin,
    provider_env: dict[str, str],
    redis_client: redis_lib.Redis,
    chaos_report: Callable[..., None],
) -> None:
    n = 400  # a large batch: two runners, both on the doomed worker
    env, h = _batch_on_a_doomed_worker(
        workers, sim, provider_env, n, "heal", watchdog_s="0.5", latency_ms=150, done_at=100
    )
    assert _runner_nodes(redis_client, h.batch_id) == {WorkerPool.nodename("doomed")}
    _sigkill(workers, "doomed")
    p = h.progress()
    assert p.status == "running" and p.done < n
    time.sleep(1.0)  # calls the dead runners had in flight still reach the provider
    ok_at_kill = sim.count("company", "ok")

    t0 = time.monotonic()
    workers.start("rescuer", ("bulk",), concurrency=2, env=env)
    final = h.wait(timeout_s=40)  # nobody runs resume: the rescuer's watchdog restarts it
    healed_s = time.monotonic() - t0

    results = h.results()
    assert (final.done, final.failed, final.status) == (n, 0, "finished")
    assert sorted(results) == list(range(n))
    assert results[7]["domain"] == "heal7.com"
    stored = int(redis_client.hget(keys.batch(h.batch_id), "done") or 0)
    assert stored == n  # every item counted and stored once
    ok = sim.count("company", "ok")
    # Calls in flight, and results not yet flushed, died with the worker: those items run again.
    # After the rescue, every item still to do reaches the provider at most once.
    assert ok - ok_at_kill <= n - p.done
    assert not redis_client.zscore(keys.BATCH_LEASES, h.batch_id)  # finished: left the index
    chaos_report(
        submitted=n,
        completed=len(results),
        lost=n - len(results),
        twice=stored - len(results),
        provider_calls_again=ok - n,
        lost_with_the_worker=ok_at_kill - p.done,
        healed_s=f"{healed_s:.1f}",
    )


def test_resume_starts_at_once_when_the_in_flight_markers_name_a_dead_runner(
    workers: WorkerPool,
    sim: SimAdmin,
    provider_env: dict[str, str],
    redis_client: redis_lib.Redis,
    chaos_report: Callable[..., None],
) -> None:
    # Item leases and in-flight markers keep their default of 120 s: only the runners' leases
    # are short, and the watchdog is off, so resume alone can restart the batch.
    n = 300
    env, h = _batch_on_a_doomed_worker(
        workers, sim, provider_env, n, "resume", watchdog_s="0", latency_ms=400, done_at=60
    )
    _sigkill(workers, "doomed")
    held = [m for m in _markers(redis_client) if m.batch_id == h.batch_id]
    assert held, "the dead runners left in-flight markers"
    assert {m.runner.split("/")[0] for m in held} == {WorkerPool.nodename("doomed")}
    time.sleep(2.5)  # their leases lapse
    workers.start("rescuer", ("bulk",), concurrency=2, env=env)
    before = h.progress().done
    time.sleep(1.0)
    assert h.progress().done == before, "nothing but resume restarts this batch"

    t0 = time.monotonic()
    out = subprocess.run(
        [PROJ, "batch", "resume", h.batch_id],
        env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took_s = time.monotonic() - t0
    assert out.returncode == 0, out.stdout + out.stderr
    # The markers (120 s) would hold their items that long if resume could not tell that
    # their runner is dead.
    assert took_s < 20, f"resume took {took_s:.1f} s"
    results = h.results()
    assert sorted(results) == list(range(n))
    stored = int(redis_client.hget(keys.batch(h.batch_id), "done") or 0)
    assert stored == n
    chaos_report(
        submitted=n,
        completed=len(results),
        lost=n - len(results),
        twice=stored - len(results),
        markers_of_the_dead=len(held),
        resume_s=f"{took_s:.1f}",
    )


def test_submit_watcher_reconnects_after_a_redis_restart(
    workers: WorkerPool,
    sim: SimAdmin,
    provider_env: dict[str, str],
    tmp_path: Path,
    chaos_report: Callable[..., None],
) -> None:
    own = RedisServer(tmp_path / "redis").start()  # this test's own Redis: it restarts it
    env = {**provider_env, "REDIS_URL": own.url, "PROJ_BATCH_CONCURRENCY": "20"}
    n = 40
    path = tmp_path / "domains.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in _domains(n, "blip")) + "\n")
    watcher = subprocess.Popen(
        [PROJ, "submit", str(path), "--pipeline", "company"],
        env={**os.environ, **env, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = redis_lib.Redis.from_url(own.url)
        wait_until(lambda: client.zcard(keys.BATCHES) == 1, 20, "the batch to be stored")
        client.close()
        time.sleep(0.5)  # the watcher is polling
        own.stop()  # SIGTERM: the append-only file keeps the batch and its runner message
        time.sleep(1.5)
        assert watcher.poll() is None, "the watcher gave up while Redis was down"
        own.start()
        workers.start("after", ("bulk",), concurrency=2, env=env)
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
        workers.stop_all()
        own.stop()
    assert watcher.returncode == 0, out + err
    assert "Redis unreachable" in err and "reconnected to Redis" in err
    assert "Traceback" not in out + err
    assert f"done {n}, failed 0" in out
    chaos_report(submitted=n, completed=n, lost=0, twice=0, watcher_exit=watcher.returncode)


def _queued(client: redis_lib.Redis, queue: str) -> list[dict[str, object]]:
    """The task messages waiting in ``queue`` (every priority list of it)."""
    lists = [queue, *(f"{queue}\x06\x16{p}" for p in range(1, 10))]
    return [json.loads(m) for name in lists for m in client.lrange(name, 0, -1)]


_HAND_OVER = """
from types import SimpleNamespace

from celery.result import denied_join_result

from proj.batch.runner import _next_runner

task = SimpleNamespace(request=SimpleNamespace(delivery_info={"routing_key": "bulk"}))
print("sending", flush=True)
with denied_join_result():  # as in a worker: no result subscription for the new task
    _next_runner(task, "b-restart", "node/1/gone")
"""


def test_next_runner_is_sent_through_a_redis_restart(
    tmp_path: Path, chaos_report: Callable[..., None]
) -> None:
    own = RedisServer(tmp_path / "redis").start()  # this test's own Redis: it stops it
    own.stop()
    sender = subprocess.Popen(
        [sys.executable, "-c", _HAND_OVER],
        env={**os.environ, "REDIS_URL": own.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sender.stdout is not None
        line = sender.stdout.readline()
        assert line == "sending\n", line + sender.communicate()[1]
        t0 = time.monotonic()
        time.sleep(1.5)  # the hand-over meets a Redis that is down
        own.start()
        _, err = sender.communicate(timeout=60)
        took_s = time.monotonic() - t0
        client = redis_lib.Redis.from_url(own.url)
        sent = _queued(client, "bulk")
        client.close()
    finally:
        if sender.poll() is None:
            sender.kill()
        own.stop()
    assert "not sent" not in err, err
    assert len(sent) == 1, "the next runner was not sent"
    assert sent[0]["headers"]["task"] == "proj.batch.run"  # type: ignore[index]
    assert took_s >= 1.0  # it waited for Redis rather than giving up
    chaos_report(submitted=1, completed=len(sent), lost=1 - len(sent), twice=0, outage_s=1.5)
