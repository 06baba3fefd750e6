"""What a breaker costs a guarded call: proj's against pybreaker with its Redis storage, and
against no breaker at all, side by side in one run.

    python -m bench.breaker_call [--calls 2000] [--rounds 3] [--threads 10]

Two measurements, each variant interleaved round by round so drift hits them equally:

- **per call**: one thread makes ``--calls`` loopback HTTP calls to the simulator (no added
  latency), each through the breaker; the figure is the time per call as a ratio to the
  same calls with no breaker (the raw HTTP floor);
- **concurrency**: ``--threads`` threads each make one call that takes 0.2 s; the figure is
  the wall time as a ratio to the same threads with no breaker. pybreaker's ``call()`` holds a
  lock for the whole call, so its threads run one at a time.

Variants: no breaker; ``pybreaker.CircuitBreaker`` on ``CircuitRedisStorage``; on
``proj.BreakerStorage``; ``proj.breaker`` with pybreaker's ``fail_max`` rule (every outcome
sent at once, in order); ``proj.breaker`` with its failure-rate rule (outcomes batched).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pybreaker
import redis
from rich.console import Console
from rich.table import Table

from bench._harness import private_redis
from proj.sim.admin import SimAdmin
from proj.stack.sim import start_sim

Call = Callable[[Callable[[], Any]], Any]


def _variants(url: str) -> dict[str, Call]:
    import proj
    from proj.guard import registry

    client = redis.Redis.from_url(url)
    name = uuid.uuid4().hex[:8]
    registry.reset()
    pb_redis = pybreaker.CircuitBreaker(
        fail_max=5, state_storage=pybreaker.CircuitRedisStorage("closed", client, namespace=name)
    )
    pb_proj = pybreaker.CircuitBreaker(
        fail_max=5, state_storage=proj.BreakerStorage(f"pb-{name}", client=client)
    )
    fail_max = proj.breaker(f"fm-{name}", fail_max=5)
    rate = proj.breaker(f"rate-{name}")
    return {
        "no breaker (floor)": lambda f: f(),
        "pybreaker + CircuitRedisStorage": pb_redis.call,
        "pybreaker + proj.BreakerStorage": pb_proj.call,
        "proj.breaker(fail_max=5)": fail_max.call,
        "proj.breaker (failure rate)": rate.call,
    }


def _per_call(call: Call, fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        call(fn)
    return (time.perf_counter() - t0) / n


def _threads(call: Call, fn: Callable[[], Any], n: int) -> float:
    threads = [threading.Thread(target=call, args=(fn,)) for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=10)
    a = ap.parse_args()
    proc, sim_url = start_sim()
    admin = SimAdmin(sim_url)
    per_call: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    try:
        admin.configure({"routes": {"source": {"latency_ms": 0}}})
        with private_redis() as server, httpx.Client(base_url=sim_url, timeout=10) as http:
            from proj.settings import reset_settings

            reset_settings()
            variants = _variants(server.url)

            def fast() -> Any:
                return http.get("/v1/sources/bench").status_code

            def slow() -> Any:
                return http.get("/v1/sources/bench", params={"delay_ms": 200}).status_code

            for call in variants.values():  # warm every path once
                _per_call(call, fast, 20)
            for _ in range(a.rounds):
                for name, call in variants.items():
                    per_call.setdefault(name, []).append(_per_call(call, fast, a.calls))
                    wall.setdefault(name, []).append(_threads(call, slow, a.threads))
            from proj.guard import registry

            registry.flush()
    finally:
        admin.close()
        proc.stop()
    floor = statistics.median(per_call["no breaker (floor)"])
    floor_wall = statistics.median(wall["no breaker (floor)"])
    t = Table(title=f"a guarded loopback call; {a.threads} threads x 0.2 s calls")
    for col in ("breaker", "per call / floor", f"{a.threads} threads: wall / floor"):
        t.add_column(col, justify="right")
    for name in per_call:
        t.add_row(
            name,
            f"{statistics.median(per_call[name]) / floor:.2f}x",
            f"{statistics.median(wall[name]) / floor_wall:.2f}x",
        )
    Console().print(t)
    print(
        f"(floor: {floor * 1e6:.0f} us per call; {floor_wall:.2f} s for the threads; "
        f"median of {a.rounds} rounds)"
    )


if __name__ == "__main__":
    main()
