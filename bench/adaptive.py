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
import collections
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

# Seconds between the samples of goodput and of the pool size, for the plot.
GOODPUT_S = 1.0
SIZE_S = 0.25


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


class _Sampler:
    """Sleeps for a run, noting for the plot into ``series``: every GOODPUT_S the time since
    the run started (``t``, s) and the goodput over the interval ending then (``goodput``, ok
    calls/s); every SIZE_S (``size_t``, s) the pool size: the adaptive controller's limit
    (``size``) and the processes it has (``processes``), from its status in Redis, or the
    ``fixed`` size."""

    def __init__(
        self, admin: SimAdmin, node: str, fixed: int | None, series: dict[str, list[Any]] | None
    ) -> None:
        self.admin, self.fixed, self.series = admin, fixed, series
        self.key = keys.concurrency_status(node)
        self.redis = redis.Redis.from_url(os.environ["REDIS_URL"])
        self.t0 = time.monotonic()
        self.last: tuple[float, int] = (0.0, 0)  # (t, ok calls) of the last goodput sample
        if series is not None:
            for k in ("t", "goodput", "size_t", "size", "processes"):
                series[k] = []

    def start(self) -> float:
        """The run starts now (the simulator's counts were just reset)."""
        self.t0 = time.monotonic()
        if self.series is not None:
            self._size(0.0)
        return self.t0

    def sleep_until(self, end: float) -> None:
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(SIZE_S, left))
            if self.series is None:
                continue
            t = time.monotonic() - self.t0
            self._size(t)
            if t - self.last[0] >= GOODPUT_S - SIZE_S / 2:
                self._goodput(t)

    def _size(self, t: float) -> None:
        assert self.series is not None
        if self.fixed is None:
            limit, processes = self.redis.hmget(self.key, "limit", "processes")
            size = int(limit) if limit else None
            procs = int(processes) if processes else None
        else:
            size = procs = self.fixed
        self.series["size_t"].append(round(t, 3))
        self.series["size"].append(size)
        self.series["processes"].append(procs)

    def _goodput(self, t: float) -> None:
        assert self.series is not None
        ok = int(self.admin.stats()["counts"]["company"]["ok"])
        last_t, last_ok = self.last
        self.last = (t, ok)
        self.series["t"].append(round(t, 3))
        self.series["goodput"].append(round((ok - last_ok) / max(t - last_t, 1e-6), 2))

    def close(self) -> None:
        self.redis.close()


def run(
    url: str,
    concurrency: int,
    adaptive: bool,
    a: argparse.Namespace,
    logs: Path,
    *,
    keep_memory: bool = False,
    series: dict[str, list[Any]] | None = None,
) -> tuple[float, float, float, float]:
    """One run; ``series``, if given, receives the run's time series (see ``_Sampler``)."""
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
    spec = WorkerSpec("w", ("bulk",), concurrency, extra_args=extra)
    sampler = _Sampler(admin, spec.nodename, None if adaptive else concurrency, series)
    try:
        workers.start(spec, env=env)
        admin.reset()
        t0 = sampler.start()
        sampler.sleep_until(t0 + a.seconds / 2)
        half = admin.stats()["counts"]["company"]
        sampler.sleep_until(t0 + a.seconds)
        counts = admin.stats()["counts"]["company"]
        elapsed = time.monotonic() - t0
    finally:
        workers.stop()
        memory = _memory(os.environ["REDIS_URL"]) if keep_memory else {}
        flush(os.environ["REDIS_URL"])
        _restore(os.environ["REDIS_URL"], memory)
        admin.close()
        sampler.close()
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
    ap.add_argument("--no-plot", action="store_true", help="write nothing to bench/results/")
    a = ap.parse_args()
    proc, url = start_sim()
    rows: dict[str, tuple[float, float, float, float]] = {}
    series: dict[str, dict[str, list[Any]]] = collections.defaultdict(dict)
    try:
        with private_redis(), tempfile.TemporaryDirectory() as tmp:
            from proj.settings import reset_settings

            reset_settings()
            first, again = "adaptive, first run (from 5)", "adaptive, next run (remembers)"
            rows[first] = run(
                url, 5, True, a, Path(tmp) / "adaptive", keep_memory=True, series=series[first]
            )
            rows[again] = run(url, 5, True, a, Path(tmp) / "again", series=series[again])
            for c in (int(x) for x in a.sweep.split(",")):
                name = f"fixed -c {c}"
                rows[name] = run(url, c, False, a, Path(tmp) / f"c{c}", series=series[name])
            rows["fixed -c 100"] = run(
                url, 100, False, a, Path(tmp) / "c100", series=series["fixed -c 100"]
            )
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
    if not a.no_plot:
        from bench import plots

        data = {
            "series": series,
            "best": best,
            "best_goodput": rows[best][0],
            "capacity": a.capacity,
            "adaptive_runs": [first, again],
        }
        plots.record("adaptive", data, a)


if __name__ == "__main__":
    main()
