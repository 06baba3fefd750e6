"""``proj status`` (once, or ``--json`` for scripts) and ``proj top`` (refreshed live): the
whole system from Redis alone, so it answers at once. Workers (from the hashes each writes:
:mod:`proj.presence`), queue depths, breakers, rate limits, deferred tasks, batches in progress.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import click
from rich.console import Console, Group
from rich.table import Table

from proj.settings import Settings, get_settings

console = Console(soft_wrap=True)


def snapshot(settings: Settings) -> dict[str, Any]:
    """Everything ``proj status`` shows, as plain data (what ``--json`` prints)."""
    from proj import figures
    from proj import status as st
    from proj.batch.progress import list_batches
    from proj.guard import callstats
    from proj.resilience import admin

    batches = [p for p in list_batches(limit=50) if p.finished is None]
    client = st.connect(settings)
    try:
        workers, queues = st.workers(client), st.queues(client, settings)
        limits, parked = st.limits(client, settings), st.parked(client)
        routes = figures.by_route(callstats.read(client))
    finally:
        client.close()
    declared = settings.queue_config.queues
    return {
        "workers": [asdict(w) for w in workers],
        "queues": queues,
        "queue_classes": {n: q.kind for n, q in declared.items()},
        "queue_figures": {q: _figures(f) for q, f in figures.rollup(routes, 0).items()},
        "category_figures": {c: _figures(f) for c, f in figures.rollup(routes, 1).items()},
        "breakers": [
            {
                "name": v.snapshot.name,
                "state": v.snapshot.state,
                "failure_rate": round(v.snapshot.failure_rate, 4),
                "calls_in_window": v.snapshot.calls,
                "half_open_at": v.snapshot.half_open_at,
            }
            for v in admin.views(settings)
        ],
        "rate_limits": [asdict(r) for r in limits],
        "parked": parked,
        "batches": [
            {
                "id": p.batch_id,
                "pipeline": p.pipeline,
                "status": p.status,
                "total": p.total,
                "done": p.done,
                "failed": p.failed,
                "in_flight": p.in_flight,
            }
            for p in batches
        ],
        "at": time.time(),
    }


def _figures(f: Any) -> dict[str, Any]:
    """One queue's or category's figures as plain data."""
    p50, p99 = f.wait_quantile(0.5), f.wait_quantile(0.99)
    return {
        "runs": int(f.total),
        "failed": int(f.runs.get("failed", 0)),
        "error_rate": None if f.error_rate is None else round(f.error_rate, 4),
        "wait_p50_s": None if p50 is None else round(p50, 4),
        "wait_p99_s": None if p99 is None else round(p99, 4),
        "mean_run_s": None if f.mean_run_s is None else round(f.mean_run_s, 4),
        "cost_usd": round(f.cost_usd, 6),
    }


def _s(v: float | None, unit: str = "s") -> str:
    if v is None:
        return "-"
    if unit == "%":
        return f"{v:.1%}"
    if unit == "$":
        return f"${v:.4f}"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"


_FIGURE_COLUMNS = ("runs", "errors", "wait p50", "wait p99", "mean run", "cost")


def _figure_cells(f: dict[str, Any] | None) -> tuple[str, ...]:
    if not f:
        return ("0", "-", "-", "-", "-", "-")
    return (
        str(f["runs"]),
        _s(f["error_rate"], "%"),
        _s(f["wait_p50_s"]),
        _s(f["wait_p99_s"]),
        _s(f["mean_run_s"]),
        _s(f["cost_usd"], "$"),
    )


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]], empty: str) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    if not rows:
        table.caption = empty
    return table


def _queues_shown(queues: str, paused: str) -> str:
    """The queues a worker consumes, then the off-peak ones it holds until their hours."""
    held = [p.split("@", 1) for p in paused.split(",") if p]
    return ", ".join(
        [*filter(None, queues.split(",")), *(f"{q} (paused until {at})" for q, at in held)]
    )


def render(snap: dict[str, Any]) -> Group:
    """The tables of one snapshot."""
    states = {"closed": "green", "half-open": "yellow"}
    return Group(
        _table(
            "workers",
            ("node", "queues", "pool", "bounds", "success", "last change"),
            [
                (
                    w["node"],
                    _queues_shown(w["queues"], w.get("paused", "")),
                    str(w["processes"]),
                    w["bounds"],
                    w["success_rate"],
                    w["note"],
                )
                for w in snap["workers"]
            ],
            "no worker is running",
        ),
        _table(
            "queues (runs since the counts began)",
            ("queue", "class", "waiting", *_FIGURE_COLUMNS),
            [
                (
                    name,
                    snap["queue_classes"].get(name, "-"),
                    str(n),
                    *_figure_cells(snap["queue_figures"].get(name)),
                )
                for name, n in snap["queues"].items()
            ],
            "",
        ),
        _table(
            "categories",
            ("category", *_FIGURE_COLUMNS),
            [(c, *_figure_cells(f)) for c, f in sorted(snap["category_figures"].items())],
            "no task run counted yet",
        ),
        _table(
            "circuit breakers",
            ("name", "state", "failure rate", "calls in window"),
            [
                (
                    b["name"],
                    f"[{states.get(b['state'], 'red')}]{b['state']}[/]",
                    f"{b['failure_rate']:.0%}" if b["calls_in_window"] else "-",
                    str(b["calls_in_window"]),
                )
                for b in snap["breakers"]
            ],
            "none yet",
        ),
        _table(
            "rate limits (shared by all workers)",
            ("dependency", "limit", "wait now"),
            [(r["name"], r["rate"], f"{r['wait_s']:.2f} s") for r in snap["rate_limits"]],
            "none",
        ),
        _table(
            "deferred tasks waiting in Redis",
            ("waiting for", "tasks"),
            [(lot, str(n)) for lot, n in snap["parked"].items()],
            "none",
        ),
        _table(
            "batches in progress",
            ("id", "pipeline", "done", "failed", "in flight"),
            [
                (
                    b["id"],
                    b["pipeline"],
                    f"{b['done']}/{b['total']}",
                    str(b["failed"]),
                    str(b["in_flight"]),
                )
                for b in snap["batches"]
            ],
            "none",
        ),
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for scripts.")
def status(as_json: bool) -> None:
    """Workers, queue depths, breakers, rate limits, deferred tasks and batches in progress."""
    snap = snapshot(get_settings())
    if as_json:
        click.echo(json.dumps(snap, sort_keys=True))
        return
    console.print(render(snap))


@click.command()
@click.option(
    "--interval", default=1.0, show_default=True, type=click.FloatRange(0.2, 60), help="Seconds."
)
def top(interval: float) -> None:
    """`proj status`, refreshed every INTERVAL seconds until Ctrl-C."""
    from rich.live import Live

    with Live(render(snapshot(get_settings())), console=console, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render(snapshot(get_settings())))
        except KeyboardInterrupt:
            pass


def install(main: click.Group) -> None:
    main.add_command(status)
    main.add_command(top)
