"""``proj demo``: bring the stack up, run the lead pipeline from a separate client process
through the simulated provider, print what happened, shut everything down."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from kombu.utils.url import maybe_sanitize_url
from rich.console import Console, Group
from rich.table import Table

from proj.errors import StackError
from proj.settings import Settings
from proj.sim.admin import SimAdmin
from proj.stack.up import Stack

#: A provider on a middling day: variable latency, some failures of every kind.
DEMO_SIM = {
    "routes": {
        "chat": {"latency_ms": 250, "latency_sigma": 0.4, "error_rate": 0.02},
        "company": {
            "latency_ms": 80,
            "latency_sigma": 0.3,
            "error_rate": 0.06,
            "error_by_key": True,
        },
        "person": {"latency_ms": 60, "latency_sigma": 0.3, "timeout_rate": 0.02, "hang_s": 30},
    },
    "seed": 7,
}


def run_demo(
    settings: Settings, *, console: Console, branch_timeout_s: float = 3.0
) -> dict[str, Any]:
    env = {"PROJ_BRANCH_TIMEOUT_S": str(branch_timeout_s)}
    stack = Stack(settings, env={**_os_environ(), **env})
    with console.status("starting Redis, the simulated provider, workers and Flower ..."):
        info = stack.start()
    try:
        console.print(f"redis  {maybe_sanitize_url(info.redis_url, mask='***')}")
        console.print(f"flower {info.flower_url}  (user {info.flower_user})")
        console.print(f"sim    {info.sim_url}")
        if info.metrics_url:
            console.print(f"metrics {info.metrics_url}")
        if info.sim_url:
            admin = SimAdmin(info.sim_url, info.sim_admin_key)
            admin.configure(DEMO_SIM)
            admin.close()
        with console.status("running the lead pipeline on 200 sample leads ..."):
            proc = subprocess.run(
                [sys.executable, "-m", "proj.demo_client"],
                env=stack.env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
        if proc.returncode != 0:
            raise StackError(f"demo client failed:\n{proc.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        if info.sim_url:
            admin = SimAdmin(info.sim_url, info.sim_admin_key)
            result["provider_calls"] = admin.stats()["totals"]
            admin.close()
    finally:
        with console.status("stopping ..."):
            stack.stop()
    console.print(render(result))
    return result


def _os_environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def render(r: dict[str, Any]) -> Group:
    s = r.get("summary", {})
    facts = Table(title="proj demo: lead enrichment", show_header=False)
    facts.add_column(justify="right", style="bold")
    facts.add_column()
    seq, wall = s.get("sequential_call_s", 0.0), r["wall_s"]
    facts.add_row(
        "leads",
        f"{r['submitted']} submitted, {r['accepted']} accepted, "
        f"{len(r['rejected'])} rejected at submission",
    )
    cached = r.get("batch", {}).get("cached", 0)
    facts.add_row(
        "provider",
        "every lead called (the result cache was not read)"
        if not cached
        else f"{cached} of {r['accepted']} answered from the cache, not called: the times below "
        "include them",
    )
    facts.add_row(
        "stored",
        f"{r['rows_stored']} rows in enriched_leads, 1 summary, notified by {r['notified']}",
    )
    facts.add_row(
        "time",
        f"{wall:.1f} s wall against {seq:.1f} s of calls one after another "
        f"({seq / wall if wall else 0:.1f}x faster)",
    )
    kinds = s.get("errors_by_kind") or {}
    facts.add_row(
        "failed branches", ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) or "none"
    )
    facts.add_row(
        "missing data",
        ", ".join(f"{b}: {len(v)} leads" for b, v in sorted(s.get("missing", {}).items()))
        or "none",
    )
    facts.add_row("cost", f"${s.get('cost_usd', 0):.4f}  models {s.get('by_model', {})}")
    top = s.get("top_prospects", [])[:3]
    facts.add_row("top prospects", ", ".join(f"{p['email']} ({p['score']})" for p in top))
    calls = r.get("provider_calls") or {}
    if calls:
        facts.add_row("provider calls", ", ".join(f"{k} {v}" for k, v in calls.items() if v))
    for line in r["rejected"]:
        facts.add_row("rejected", line)

    waits = Table(title="queue wait")
    for col in ("queue", "tasks", "p50", "p99"):
        waits.add_column(col, justify="right")
    for q in ("urgent", "bulk"):
        w = r.get("queue_wait", {}).get(q)
        if w:
            waits.add_row(q, str(w["n"]), _ms(w["p50_s"]), _ms(w["p99_s"]))
    waits.caption = f"{r.get('tasks_done', 0)} tasks done in {wall:.1f} s wall time"
    return Group(facts, waits)
