"""A long provider outage with a backlog queued before it and more arriving during it, on a
real worker with a short visibility timeout: deferred tasks are parked in Redis, not held in
the worker, come back through the breaker (one probe per open period, then a ramp), and none
is lost or calls the provider twice.

Deferral used to re-publish with a countdown: every deferred task then waited in the worker
as an unacknowledged ETA message, they came due together, and those held past the visibility
timeout were restored by the broker and ran twice. Here the outage lasts longer than the
visibility timeout, so that design fails this test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from proj import keys
from proj.parking import Parking
from proj.results import states, wait_all
from proj.sim.admin import SimAdmin
from tests.support import WorkerPool, wait_until

pytestmark = pytest.mark.serial  # measures rates or timings: runs alone (Makefile)

ROOT = Path(__file__).resolve().parents[2]

OPEN_S = 2.0
VISIBILITY_S = 8  # the outage below outlasts it
OUTAGE_S = 12.0


def _state(r: redis_lib.Redis, name: str) -> str:
    return (r.hget(keys.breaker(name), "state") or b"closed").decode()


def _rss_kb(pid: int) -> int:
    """Resident memory of a worker and its pool processes."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _held(app: Any, node: str) -> int:
    """Messages the worker holds: ETA (scheduled) and prefetched (reserved)."""
    insp = app.control.inspect(destination=[node], timeout=1.0)
    scheduled = (insp.scheduled() or {}).get(node, [])
    reserved = (insp.reserved() or {}).get(node, [])
    return len(scheduled) + len(reserved)


def test_a_long_outage_parks_deferred_work_outside_the_worker(
    workers: WorkerPool,
    sim: SimAdmin,
    redis_client: redis_lib.Redis,
    celery_app: Any,
    chaos_report: Callable[..., None],
) -> None:
    from tests import usertasks

    env = {
        "USER_API_URL": sim.base_url,
        "PYTHONPATH": str(ROOT),
        "PROJ_BREAKERS": json.dumps({"payments": {"min_calls": 5, "open_s": OPEN_S}}),
        "PROJ_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
        "PROJ_TASK_SOFT_TIME_LIMIT_S": "3",
        "PROJ_TASK_TIME_LIMIT_S": "4",
    }
    proc = workers.start(
        "parker", ("bulk",), concurrency=4, env=env, extra_args=("-I", "tests.usertasks")
    )
    node = workers.nodename("parker")
    pid = proc.pid
    sim.configure({"routes": {"source": {"latency_ms": 20, "down": True}}})

    results = [usertasks.charge.delay(i) for i in range(60)]  # a backlog queued before
    wait_until(lambda: _state(redis_client, "payments") == "open", 30, "the breaker to open")
    opened = time.time()
    rss_start = _rss_kb(pid)
    parking = Parking(redis_client)
    held, parked = [], []
    next_sample = 0.0
    while time.time() < opened + OUTAGE_S:  # more arrives during the outage
        results.append(usertasks.charge.delay(len(results)))
        if time.time() >= next_sample:
            held.append(_held(celery_app, node))
            parked.append(sum(parking.counts().values()))
            next_sample = time.time() + 1.0
        time.sleep(0.1)
    rss_end = _rss_kb(pid)
    sim.configure({"routes": {"source": {"latency_ms": 20, "down": False}}})
    recovered = time.time()

    n = len(results)
    metas = wait_all(results, timeout_s=120)
    done = states(metas).get("SUCCESS", 0)
    ok_calls = sim.count("source", "ok")
    down_calls = [t for t in sim.arrivals("source") if opened + 0.3 <= t < recovered]
    periods = (recovered - opened - 0.3) / OPEN_S
    chaos_report(
        submitted=n,
        completed=done,
        lost=n - done,
        twice=ok_calls - done,
        parked_peak=max(parked),
        held_in_worker_peak=max(held),
        rss_kb=f"{rss_start}->{rss_end}",
        calls_while_down=len(down_calls),
        open_periods=f"{periods:.1f}",
    )
    assert states(metas) == {"SUCCESS": n}
    assert sorted(m["result"] for m in metas.values()) == list(range(n))
    assert ok_calls == n  # each called the provider successfully once: none ran twice
    assert max(parked) > 0  # deferred work waited in Redis...
    assert max(held) <= 8, held  # ...not in the worker (at most a prefetch's worth)
    assert len(down_calls) <= int(periods) + 1, (len(down_calls), periods)
    assert proc.pid == pid and proc.alive()
    assert sum(Parking(redis_client).counts().values()) == 0
