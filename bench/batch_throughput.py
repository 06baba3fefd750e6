"""The whole system against the raw HTTP floor: 10,000 calls of 0.5 s with 500 in flight.

    python -m bench.batch_throughput [--calls 10000] [--inflight 500] [--latency-ms 500]

Same simulator, same run:
  floor        plain aiohttp making the calls, --inflight at a time (the bare client)
  proj batch   proj.batch.submit("company", ...) through Celery, the breaker, the rate limiter
               (a generous global limit, so its script runs on every call), progress and
               result storage: one worker -c 2, 2 runners x (inflight / 2) calls in flight
The target: proj within 1.15x of the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from bench._harness import Workers, flush, private_redis
from proj.sim.admin import SimAdmin
from proj.stack.sim import start_sim
from proj.stack.up import WorkerSpec


async def floor(url: str, calls: int, inflight: int) -> float:
    sem = asyncio.Semaphore(inflight)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight)) as s:

        async def one(i: int) -> None:
            async with sem, s.get(f"{url}/v1/companies/f{i}.com") as r:
                await r.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return time.perf_counter() - t0


def proj_batch(url: str, a: argparse.Namespace, logs: Path) -> float:
    from proj import batch

    runners = 2
    env = {
        "PROVIDER_BASE_URL": url,
        "PROJ_BATCH_RUNNERS": str(runners),
        "PROJ_BATCH_CONCURRENCY": str(a.inflight // runners),
        "PROJ_RATE_LIMITS": json.dumps({"company": "100000/s"}),
    }
    workers = Workers(logs)
    try:
        workers.start(WorkerSpec("bulk", ("bulk",), runners), env=env)
        os.environ.update(env)
        from proj.settings import reset_settings

        reset_settings()
        items = [{"domain": f"p{i}.com"} for i in range(a.calls)]
        t0 = time.perf_counter()
        h = batch.submit("company", items)
        p = h.wait(timeout_s=600, interval_s=0.05)
        wall = time.perf_counter() - t0
        assert (p.done, p.failed) == (a.calls, 0), p
        return wall
    finally:
        workers.stop()
        flush(os.environ["REDIS_URL"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--inflight", type=int, default=500)
    ap.add_argument("--latency-ms", type=float, default=500)
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two runs this often")
    a = ap.parse_args()
    proc, url = start_sim()
    admin = SimAdmin(url)
    admin.configure({"default": {"latency_ms": a.latency_ms}})
    floors, projs = [], []
    try:
        with private_redis(), tempfile.TemporaryDirectory() as tmp:
            for r in range(a.repeat):
                floors.append(asyncio.run(floor(url, a.calls, a.inflight)))
                projs.append(proj_batch(url, a, Path(tmp) / f"run{r}"))
    finally:
        admin.close()
        proc.stop()
    ideal = a.calls / a.inflight * a.latency_ms / 1000
    t = Table(title=f"{a.calls} calls of {a.latency_ms:.0f} ms, {a.inflight} in flight")
    for col in ("", "wall / floor", "wall / ideal"):
        t.add_column(col, justify="right")
    f, pj = min(floors), min(projs)
    t.add_row("raw HTTP floor (aiohttp)", "1.00x", f"{f / ideal:.2f}x")
    t.add_row(
        "proj batch (Celery, breaker, limiter, progress)", f"{pj / f:.2f}x", f"{pj / ideal:.2f}x"
    )
    Console().print(t)
    print(
        f"(floor runs {', '.join(f'{x:.2f}' for x in floors)} s; proj runs "
        f"{', '.join(f'{x:.2f}' for x in projs)} s; ideal {ideal:.1f} s; best of each)"
    )


if __name__ == "__main__":
    main()
