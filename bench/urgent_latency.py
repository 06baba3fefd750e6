"""Queue wait of urgent tasks: idle, behind a 10,000-task bulk backlog, and on bare Celery.

    python -m bench.urgent_latency [--backlog 10000] [--urgent 50]

Three scenarios in one run, on a private Redis, with the same number of worker processes:
  proj idle      urgent tasks, nothing else queued (urgent -c 2, bulk -c 4)
  proj backlog   the same urgent tasks sent after a bulk backlog
  bare Celery    everything on one queue, Celery's defaults, one worker -c 6
The figure that matters is the ratio of the backlog p99 to the idle p99 (goal: < 2).
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench._harness import Workers, flush, private_redis
from proj.stack.up import WorkerSpec
from proj.stats import percentile

BULK_TASK_S = 0.01


def _send_urgent(task: Any, n: int, **options: Any) -> list[float]:
    results = []
    for _ in range(n):
        results.append(task.apply_async((0.0,), **options))
        time.sleep(0.02)
    return [r.get(timeout=600)["queue_wait_s"] for r in results]


def scenario_proj(backlog: int, urgent: int, log_dir: Path) -> list[float]:
    from proj.tasks.demo import urgent_work, work

    workers = Workers(log_dir)
    try:
        workers.start(WorkerSpec("urgent", ("urgent",), 2))
        workers.start(WorkerSpec("bulk", ("bulk",), 4))
        bulk = [work.delay(BULK_TASK_S) for _ in range(backlog)]
        waits = _send_urgent(urgent_work, urgent)
        for r in bulk:
            r.forget()
        return waits
    finally:
        workers.stop()
        flush(os.environ["REDIS_URL"])


def scenario_bare(backlog: int, urgent: int, log_dir: Path) -> list[float]:
    bare = importlib.import_module("bench.bare_app")
    workers = Workers(log_dir)
    try:
        workers.start(WorkerSpec("bare", ("celery",), 6), app="bench.bare_app")
        for _ in range(backlog):
            bare.work.delay(BULK_TASK_S)
        return _send_urgent(bare.work, urgent)
    finally:
        workers.stop()
        flush(os.environ["REDIS_URL"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backlog", type=int, default=10_000)
    ap.add_argument("--urgent", type=int, default=50)
    ap.add_argument("--no-plot", action="store_true", help="write nothing to bench/results/")
    args = ap.parse_args()
    console = Console()
    with private_redis(), tempfile.TemporaryDirectory() as tmp:
        from proj.settings import reset_settings

        reset_settings()
        logs = Path(tmp)
        rows = {
            "proj idle": scenario_proj(0, args.urgent, logs / "idle"),
            "proj backlog": scenario_proj(args.backlog, args.urgent, logs / "backlog"),
            "bare Celery backlog": scenario_bare(args.backlog, args.urgent, logs / "bare"),
        }
    idle_p99 = percentile(rows["proj idle"], 99)
    t = Table(title=f"urgent queue wait, {args.urgent} tasks behind {args.backlog} bulk tasks")
    for col in ("scenario", "p50 ms", "p99 ms", "p99 / proj idle p99"):
        t.add_column(col, justify="right")
    for name, waits in rows.items():
        p50, p99 = percentile(waits, 50), percentile(waits, 99)
        t.add_row(name, f"{p50 * 1000:.1f}", f"{p99 * 1000:.1f}", f"{p99 / idle_p99:.2f}x")
    console.print(t)
    if not args.no_plot:
        from bench import plots

        waits_ms = {k: [w * 1000 for w in v] for k, v in rows.items()}
        plots.record("urgent_latency", {"waits_ms": waits_ms}, args)


if __name__ == "__main__":
    main()
