"""Where small batches stop needing more than one runner: batch latency by size.

    python -m bench.batch_small [--sizes 10,50,100,250,1000] [--latency-ms 200]

For each size, one worker (-c 4): the batch with one runner, the batch with the default
PROJ_BATCH_RUNNERS, and one Celery task per item (``proj.calls.company``). Printed as ratios
to the fastest of the three at that size. PROJ_BATCH_SMALL_MAX is where one runner stops
being as fast as several.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="10,50,100,250,1000")
    ap.add_argument("--latency-ms", type=float, default=200)
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    proc, url = start_sim()
    admin = SimAdmin(url)
    admin.configure({"default": {"latency_ms": a.latency_ms}})
    rows: dict[int, dict[str, float]] = {}
    try:
        with private_redis(), tempfile.TemporaryDirectory() as tmp:
            os.environ.update({"PROVIDER_BASE_URL": url, "PROJ_CACHE_TTL_S": "0"})
            from proj import batch
            from proj.batch.submit import runners_for
            from proj.results import wait_all
            from proj.settings import get_settings, reset_settings
            from proj.tasks import calls

            for small_max in (10**9, 0):  # every batch one runner; then the default count
                os.environ["PROJ_BATCH_SMALL_MAX"] = str(small_max)
                reset_settings()
                workers = Workers(Path(tmp) / f"w{small_max}")
                workers.start(WorkerSpec("bulk", ("bulk",), 4), env=dict(os.environ))
                try:
                    for n in sizes:
                        label = (
                            "1 runner" if small_max else f"{runners_for(n, get_settings())} runners"
                        )
                        t0 = time.perf_counter()
                        batch.submit(
                            "company", [{"domain": f"s{small_max}-{n}-{i}.com"} for i in range(n)]
                        ).wait(timeout_s=300, interval_s=0.02)
                        rows.setdefault(n, {})[label if small_max else "batch, default runners"] = (
                            time.perf_counter() - t0
                        )
                        if small_max:
                            t0 = time.perf_counter()
                            wait_all(
                                [calls.company.delay(f"t{n}-{i}.com") for i in range(n)], 300, 0.02
                            )
                            rows[n]["one task per item"] = time.perf_counter() - t0
                finally:
                    workers.stop()
                    flush(os.environ["REDIS_URL"])
    finally:
        admin.close()
        proc.stop()
    t = Table(title=f"batch latency by size ({a.latency_ms:.0f} ms calls), ratio to the fastest")
    cols = ["1 runner", "batch, default runners", "one task per item"]
    t.add_column("items", justify="right")
    for c in cols:
        t.add_column(c, justify="right")
    for n, r in rows.items():
        best = min(r.values())
        t.add_row(str(n), *(f"{r[c] / best:.2f}x" for c in cols))
    Console().print(t)
    print(
        "(seconds: "
        + "; ".join(
            f"{n}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()) for n, r in rows.items()
        )
        + ")"
    )


if __name__ == "__main__":
    main()
