"""A provider fully down for 30 s under load: with the breaker, and without it, in one run.

    python -m bench.breaker_outage [--outage 30] [--rate 60] [--open-s 10]

Workers (2 x -c 8) run one company lookup per task, submitted at a steady rate. At t=5 s the
simulator answers 503 to everything for --outage seconds. Reported: seconds from the outage
to the breaker opening, calls that reached the provider while it was open (probes and the
rest), seconds from recovery to the breaker closing, and tasks failed or lost.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
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

WARMUP_S = 5.0


def scenario(url: str, breaker: bool, a: argparse.Namespace, logs: Path) -> dict[str, Any]:
    from proj.results import wait_all
    from proj.tasks import calls

    env = {
        "PROVIDER_BASE_URL": url,
        "PROJ_BREAKER_ENABLED": str(breaker).lower(),
        "PROJ_BREAKER_OPEN_S": str(a.open_s),
    }
    admin = SimAdmin(url)
    admin.reset(config=True)
    admin.configure({"routes": {"company": {"latency_ms": 100}}})
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    workers = Workers(logs)
    out: dict[str, Any] = {}
    try:
        for n in ("w1", "w2"):
            workers.start(WorkerSpec(n, ("bulk",), 8), env=env)
        results: list[Any] = []
        total = int(a.rate * (WARMUP_S + a.outage + 10))
        stop = threading.Event()

        def submit() -> None:
            t0 = time.monotonic()
            for i in range(total):
                if stop.is_set():
                    return
                results.append(calls.company.delay(f"c{i}.com"))
                delay = t0 + (i + 1) / a.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

        feeder = threading.Thread(target=submit, daemon=True)
        feeder.start()
        time.sleep(WARMUP_S)
        calls_at_outage = admin.count("company")
        admin.configure({"routes": {"company": {"latency_ms": 100, "down": True}}})
        down_at = time.monotonic()
        opened_at = None
        calls_when_open = probes_when_open = 0
        while time.monotonic() < down_at + a.outage:
            raw = r.hget(keys.breaker("company"), "state")
            state = raw.decode() if isinstance(raw, bytes) else "closed"
            if opened_at is None and state == "open":
                opened_at = time.monotonic()
                time.sleep(0.25)  # calls already admitted finish
                calls_when_open = admin.count("company")
                probes_when_open = int(r.hget(keys.breaker("company"), "probes_total") or 0)
            time.sleep(0.02)
        calls_during_outage = admin.count("company") - calls_at_outage
        calls_while_open = admin.count("company") - calls_when_open if opened_at else None
        probes = int(r.hget(keys.breaker("company"), "probes_total") or 0) - probes_when_open
        admin.configure({"routes": {"company": {"latency_ms": 100, "down": False}}})
        up_at = time.monotonic()
        closed_after = None
        if breaker:
            while time.monotonic() < up_at + a.open_s + 30:
                if (r.hget(keys.breaker("company"), "state") or b"") == b"closed":
                    closed_after = time.monotonic() - up_at
                    break
                time.sleep(0.02)
        feeder.join()
        metas = wait_all(results, timeout_s=a.outage + 120)
        states = [m["status"] for m in metas.values()]
        out = {
            "submitted": len(results),
            "succeeded": states.count("SUCCESS"),
            "failed": states.count("FAILURE"),
            "lost": len(results)
            - len(states)
            + sum(s not in ("SUCCESS", "FAILURE") for s in states),
            "calls_during_outage": calls_during_outage,
            "open_after_s": None if opened_at is None else opened_at - down_at,
            "calls_while_open": calls_while_open,
            "probes_while_open": probes if breaker else None,
            "closed_after_recovery_s": closed_after,
        }
    finally:
        workers.stop()
        flush(os.environ["REDIS_URL"])
        admin.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--outage", type=float, default=30)
    ap.add_argument("--rate", type=float, default=60, help="tasks submitted per second")
    ap.add_argument("--open-s", type=float, default=10, help="PROJ_BREAKER_OPEN_S")
    ap.add_argument("--logs", type=Path, default=None, help="keep worker logs here")
    ap.add_argument("--only-breaker", action="store_true")
    a = ap.parse_args()
    proc, url = start_sim()
    try:
        with private_redis(), tempfile.TemporaryDirectory() as tmp:
            from proj.settings import reset_settings

            reset_settings()
            logs = a.logs or Path(tmp)
            rows = {"proj (breaker)": scenario(url, True, a, logs / "on")}
            if not a.only_breaker:
                rows["no breaker"] = scenario(url, False, a, logs / "off")
    finally:
        proc.stop()
    t = Table(title=f"provider down for {a.outage:.0f} s under {a.rate:.0f} tasks/s")
    t.add_column("")
    for name in rows:
        t.add_column(name, justify="right")

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)

    for key in next(iter(rows.values())):
        t.add_row(key.replace("_", " "), *(fmt(r[key]) for r in rows.values()))
    on, off = rows["proj (breaker)"], rows.get("no breaker")
    if off and off["calls_during_outage"]:
        ratio = on["calls_during_outage"] / off["calls_during_outage"]
        t.caption = f"calls to the down provider: {ratio:.2f}x of the same run without a breaker"
    Console().print(t)


if __name__ == "__main__":
    main()
