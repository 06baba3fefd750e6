"""The demo's client: a separate process that only imports proj, as an application would.

It submits the sample leads as a batch (the progress bar goes to stderr) and, while that runs,
sends urgent and bulk tasks with ``.delay()`` / ``apply_async()`` to show that urgent work does
not wait behind the batch. Prints one JSON line on stdout.

    python -m proj.demo_client [--leads FILE] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

from proj import batch, store
from proj.batch.cli import show_progress
from proj.results import wait_all
from proj.stats import percentile
from proj.tasks.demo import urgent_work, work


def sample_leads() -> list[Any]:
    text = resources.files("proj.data").joinpath("sample_leads.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _waits(metas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    w = [m["result"]["queue_wait_s"] for m in metas.values() if m["status"] == "SUCCESS"]
    return {"n": len(w), "p50_s": percentile(w, 50), "p99_s": percentile(w, 99)}


def run(items: list[Any], timeout_s: float) -> dict[str, Any]:
    t0 = time.time()
    handle = batch.submit("leads", items, fresh=True)  # real calls on every run
    bulk = [work.delay(0.05) for _ in range(200)]
    urgent = []
    for i in range(20):
        urgent.append(urgent_work.delay(0.0) if i % 2 else work.apply_async((0.0,), priority=0))
        time.sleep(0.05)
    final = show_progress(handle, timeout_s=timeout_s)
    wall = time.time() - t0
    urgent_metas = wait_all(urgent, timeout_s)
    bulk_metas = wait_all(bulk, timeout_s)
    summary = store.run_summary(handle.batch_id) or {}
    rows = store.leads_of_run(handle.batch_id)
    return {
        "submitted": len(items),
        "accepted": handle.accepted,
        "rejected": [str(r) for r in handle.rejected],
        "rows_stored": len(rows),
        "wall_s": wall,
        "batch": final.to_dict(),
        "notified": "log",
        "summary": summary,
        "queue_wait": {"urgent": _waits(urgent_metas), "bulk": _waits(bulk_metas)},
        "tasks_done": final.done + len(urgent_metas) + len(bulk_metas),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--leads", type=Path, default=None, help="JSONL file; the shipped sample by default."
    )
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    items = (
        [json.loads(x) for x in a.leads.read_text().splitlines() if x.strip()]
        if a.leads
        else sample_leads()
    )
    print(json.dumps(run(items, a.timeout), default=str))


if __name__ == "__main__":
    main()
