"""A global limit with 4 workers: proj's limit against Celery's own ``rate_limit``.

    python -m bench.ratelimit [--rate 20] [--workers 4] [--seconds 20]

(20/s by default: Celery's 4 x 20/s = 80/s is within what this machine's bare workers manage;
at 50/s they top out below 4 x 50/s, which hides the per-worker semantics.)

Both runs: 4 worker processes (-c 4), one company lookup per task, the same simulator; the
backlog is published while the workers wait on an empty queue, then they all start on it.
Celery's ``rate_limit`` is per worker instance, so 4 workers let through 4 times the rate.
Reported: the achieved rate over the middle of the run and the busiest 1-second window.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench._harness import Workers, flush, private_redis
from proj.sim.admin import SimAdmin
from proj.stack.sim import start_sim
from proj.stack.up import WorkerSpec


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    best = j = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def run(url: str, proj: bool, a: argparse.Namespace, logs: Path) -> tuple[float, int, list[float]]:
    admin = SimAdmin(url)
    admin.reset(config=True)
    admin.configure({"routes": {"company": {"latency_ms": 20}}})
    env = {
        "PROVIDER_BASE_URL": url,
        "BARE_RATE_LIMIT": f"{a.rate:g}/s",
        "PROJ_RATE_LIMITS": json.dumps({"company": f"{a.rate:g}/s"}),
    }
    workers = Workers(logs)
    total = int(a.rate * (a.seconds + 8) * (1 if proj else a.workers))
    queue, idle = ("bulk", "urgent") if proj else ("celery", "idle")
    try:
        # The workers wait on an empty queue while this process publishes (seconds of CPU
        # here), then all take up the work queue at once.
        for n in range(a.workers):
            workers.start(
                WorkerSpec(f"w{n}", (idle,), 4), app="proj" if proj else "bench.bare_app", env=env
            )
        if proj:
            from proj.app import app
            from proj.tasks import calls

            for i in range(total):
                calls.company.delay(f"p{i}.com")
        else:
            from bench import bare_app

            app = bare_app.app
            for i in range(total):
                bare_app.company.delay(f"b{i}.com")
        nodes = [WorkerSpec(f"w{n}", (), 1).nodename for n in range(a.workers)]
        app.control.add_consumer(queue, destination=nodes, reply=True, timeout=5)
        deadline = time.monotonic() + a.seconds * 4 + 60
        while admin.count("company") < total * 0.95 and time.monotonic() < deadline:
            time.sleep(0.5)
        times = sorted(admin.arrivals("company"))
    finally:
        workers.stop()
        flush(os.environ["REDIS_URL"])
        admin.close()
    start = times[0] + 3.0
    middle = [t for t in times if start <= t < start + a.seconds]
    return len(middle) / a.seconds, busiest_second(times), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--no-plot", action="store_true", help="write nothing to bench/results/")
    a = ap.parse_args()
    proc, url = start_sim()
    try:
        with private_redis(), tempfile.TemporaryDirectory() as tmp:
            from proj.settings import reset_settings

            reset_settings()
            rows = {
                "proj global limit": run(url, True, a, Path(tmp) / "proj"),
                "Celery rate_limit": run(url, False, a, Path(tmp) / "celery"),
            }
    finally:
        proc.stop()
    t = Table(title=f"limit {a.rate:g}/s, {a.workers} workers")
    for col in ("", "achieved / limit", "busiest 1 s / limit"):
        t.add_column(col, justify="right")
    for name, (achieved, busiest, _) in rows.items():
        t.add_row(name, f"{achieved / a.rate:.2f}x", f"{busiest / a.rate:.2f}x")
    Console().print(t)
    print(
        "(achieved: "
        + ", ".join(f"{k} {v[0]:.1f}/s" for k, v in rows.items())
        + "; busiest second: "
        + ", ".join(f"{k} {v[1]}" for k, v in rows.items())
        + ")"
    )
    if not a.no_plot:
        from bench import plots

        per_second = {k: plots.per_second(v[2], v[2][0]) for k, v in rows.items()}
        data = {"per_second": per_second, "limit": a.rate, "workers": a.workers}
        plots.record("ratelimit", data, a)


if __name__ == "__main__":
    main()
