"""Goodput against a provider with a hidden capacity: the adaptive worker (a first run that
ramps up from ``-c 5``, then a second run that starts where the first settled, as the next
day's worker of the same queues does), a sweep of fixed ``-c``, and a fixed ``-c 100``, one
after another in one run.

    python -m bench.adaptive [--capacity 40] [--latency-ms 500] [--seconds 40] [--sweep 20,30,40,50]

The simulator answers 429 beyond --capacity concurrent requests (--latency-ms each: at 500 ms
the capacity allows 80 calls/s, well below what one worker's task dispatch manages on a 2-core
machine, so the provider, not the CPU, is the bottleneck). Each run:
a backlog of company lookups, one worker, --seconds of work. Goodput is successful calls per
second over the run; the 429 share is 429s over all calls.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from bench._harness import Workers, flush, private_redis
from proj import keys
from proj.sim.admin import SimAdmin
from proj.stack.sim import start_sim
from proj.stack.up import WorkerSpec


def _memory(url: str) -> dict[Any, dict[Any, Any]]:
    """What adaptive workers remember per set of queues (kept across runs when asked)."""
    client = redis.Redis.from_url(url)
    try:
        return {k: client.hgetall(k) for k in client.scan_iter(keys.concurrency_memory("*"))}
    finally:
        client.close()


def _restore(url: str, memory: dict[Any, dict[Any, Any]]) -> None:
    client = redis.Redis.from_url(url)
    try:
        for k, fields in memory.items():
            client.hset(k, mapping=fields)
    finally:
        client.close()


def run(
    url: str,
    concurrency: int,
    adaptive: bool,
    a: argparse.Namespace,
    logs: Path,
    *,
    keep_memory: bool = False,
) -> tuple[float, float, float, float]:
    from proj.tasks import calls

    admin = SimAdmin(url)
    admin.reset(config=True)
    admin.configure(
        {
            "routes": {
                "company": {
                    "latency_ms": a.latency_ms,
                    "capacity_concurrent": a.capacity,
                    "retry_after_s": 0,
                }
            }
        }
    )
    env = {
        "PROVIDER_BASE_URL": url,
        "PROJ_BREAKER_ENABLED": "false",
        "PROJ_ADAPTIVE_COOLDOWN_S": "0.5",
        "PROJ_ADAPTIVE_TICK_S": "0.25",
    }
    extra = ("--adaptive", "--adaptive-max", "100") if adaptive else ()
    for i in range(int(a.capacity * 1000 / a.latency_ms * a.seconds * 1.3)):
        calls.company.delay(f"c{i}.com")
    workers = Workers(logs)
    try:
        workers.start(WorkerSpec("w", ("bulk",), concurrency, extra_args=extra), env=env)
        admin.reset()
        t0 = time.monotonic()
        time.sleep(a.seconds / 2)
        half = admin.stats()["counts"]["company"]
        time.sleep(a.seconds / 2)
        counts = admin.stats()["counts"]["company"]
        elapsed = time.monotonic() - t0
    finally:
        workers.stop()
        memory = _memory(os.environ["REDIS_URL"]) if keep_memory else {}
        flush(os.environ["REDIS_URL"])
        _restore(os.environ["REDIS_URL"], memory)
        admin.close()
    ok, limited = counts["ok"], counts["rate_limited"]
    steady_ok = ok - half["ok"]
    steady_limited = limited - half["rate_limited"]
    return (
        ok / elapsed,
        limited / max(1, ok + limited),
        steady_ok / (elapsed / 2),
        steady_limited / max(1, steady_ok + steady_limited),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--capacity", type=int, default=40)
    ap.add_argument("--latency-ms", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--sweep", default="20,30,40,50")
    a = ap.parse_args()
    proc, url = start_sim()
    rows: dict[str, tuple[float, float, float, float]] = {}
    try:
        with private_redis(), tempfile.TemporaryDirectory() as tmp:
            from proj.settings import reset_settings

            reset_settings()
            rows["adaptive, first run (from 5)"] = run(
                url, 5, True, a, Path(tmp) / "adaptive", keep_memory=True
            )
            rows["adaptive, next run (remembers)"] = run(url, 5, True, a, Path(tmp) / "again")
            for c in (int(x) for x in a.sweep.split(",")):
                rows[f"fixed -c {c}"] = run(url, c, False, a, Path(tmp) / f"c{c}")
            rows["fixed -c 100"] = run(url, 100, False, a, Path(tmp) / "c100")
    finally:
        proc.stop()
    sweep = {k: v for k, v in rows.items() if k.startswith("fixed -c") and k != "fixed -c 100"}
    best = max(sweep, key=lambda k: sweep[k][0])
    steady_best = max(sweep, key=lambda k: sweep[k][2])
    t = Table(title=f"hidden capacity {a.capacity} concurrent, {a.seconds:.0f} s per run")
    for col in (
        "worker",
        "goodput / best fixed",
        "429 share",
        "2nd half: goodput / best",
        "2nd half: 429 share",
    ):
        t.add_column(col, justify="right")
    for name, (goodput, share, steady, steady_share) in rows.items():
        mark = " (best of sweep)" if name == best else ""
        t.add_row(
            name + mark,
            f"{goodput / rows[best][0]:.2f}x",
            f"{share:.1%}",
            f"{steady / rows[steady_best][2]:.2f}x",
            f"{steady_share:.1%}",
        )
    Console().print(t)
    print("(goodput: " + ", ".join(f"{k} {v[0]:.0f}/s" for k, v in rows.items()) + ")")


if __name__ == "__main__":
    main()
