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

from bench import plots
from bench._harness import Workers, flush, private_redis
from proj import keys
from proj.sim.admin import SimAdmin
from proj.stack.sim import start_sim
from proj.stack.up import WorkerSpec

WARMUP_S = 5.0


def scenario(
    url: str, breaker: bool, a: argparse.Namespace, logs: Path, series: dict[str, Any]
) -> dict[str, Any]:
    """One run; ``series`` receives the calls per second (from the start of the load), the
    outage window and the breaker's state changes, for the plot."""
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
        load_at = time.time()  # wall clock, as the simulator's arrival times
        feeder.start()
        time.sleep(WARMUP_S)
        calls_at_outage = admin.count("company")
        admin.configure({"routes": {"company": {"latency_ms": 100, "down": True}}})
        down_at = time.monotonic()
        down_wall = time.time()
        # Breaker state changes and probes seen by the polls below (wall clock), for the
        # plot. A probe that fails at once leaves the breaker half-open for less than a poll:
        # it shows as a new probes_total.
        changes: list[tuple[float, str]] = [(load_at, "closed")]
        probe_times: list[float] = []
        probes_seen = [int(r.hget(keys.breaker("company"), "probes_total") or 0)]

        def seen(state: str, probes_total: Any = None) -> None:
            now = time.time()
            if state and state != changes[-1][1]:
                changes.append((now, state))
            if probes_total is not None and int(probes_total) > probes_seen[0]:
                probe_times.extend([now] * (int(probes_total) - probes_seen[0]))
                probes_seen[0] = int(probes_total)

        opened_at = None
        calls_when_open = probes_when_open = 0
        while time.monotonic() < down_at + a.outage:
            raw, probes_total = r.hmget(keys.breaker("company"), "state", "probes_total")
            state = raw.decode() if isinstance(raw, bytes) else "closed"
            seen(state, probes_total)
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
        up_wall = time.time()
        closed_after = None
        if breaker:
            while time.monotonic() < up_at + a.open_s + 30:
                raw, probes_total = r.hmget(keys.breaker("company"), "state", "probes_total")
                seen(raw.decode() if isinstance(raw, bytes) else "", probes_total)
                if raw == b"closed":
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
        arrivals = admin.arrivals("company")
        series["per_s"] = plots.per_second(arrivals, load_at)
        series["t"] = list(range(len(series["per_s"])))
        series["outage"] = [down_wall - load_at, up_wall - load_at]
        series["states"] = [[t - load_at, st] for t, st in changes] if breaker else []
        series["probes"] = [t - load_at for t in probe_times] if breaker else []
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
    ap.add_argument("--no-plot", action="store_true", help="write nothing to bench/results/")
    a = ap.parse_args()
    proc, url = start_sim()
    try:
        with private_redis(), tempfile.TemporaryDirectory() as tmp:
            from proj.settings import reset_settings

            reset_settings()
            logs = a.logs or Path(tmp)
            series: dict[str, dict[str, Any]] = {"proj (breaker)": {}, "no breaker": {}}
            rows = {"proj (breaker)": scenario(url, True, a, logs / "on", series["proj (breaker)"])}
            if not a.only_breaker:
                rows["no breaker"] = scenario(url, False, a, logs / "off", series["no breaker"])
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
    if not a.no_plot:
        on_series = series["proj (breaker)"]
        data = {
            "calls": {
                k: {"t": v["t"], "per_s": v["per_s"]} for k, v in series.items() if k in rows
            },
            "outage": on_series["outage"],
            "states": on_series["states"],
            "probes": on_series["probes"],
            "states_of": "proj (breaker)",
        }
        plots.record("breaker_outage", data, a)


if __name__ == "__main__":
    main()
