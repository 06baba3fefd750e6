"""The ``proj`` command line."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

import click
from rich.console import Console

from proj.errors import ProjError
from proj.settings import Settings, get_settings

console = Console(soft_wrap=True)
T = TypeVar("T")


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


@click.group()
def main() -> None:
    """proj: parallel AI and HTTP calls on Celery."""


@main.command()
def up() -> None:
    """Start Redis (unless REDIS_URL is set), urgent and bulk workers and Flower.

    Ctrl-C or SIGTERM stops every process it started.
    """
    from proj.stack.up import Stack

    settings = _settings()
    stack = Stack(settings)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        with console.status("starting ..."):
            info = stack.start()
        console.print(f"[bold]redis[/]   {info.redis_url}")
        for name in info.workers:
            console.print(f"[bold]worker[/]  {name}")
        console.print(
            f"[bold]flower[/]  {info.flower_url}  user {info.flower_user} "
            f"password {info.flower_password}"
        )
        if info.sim_url:
            console.print(
                f"[bold]sim[/]     {info.sim_url}  (simulated provider; admin at /admin/stats)"
            )
        console.print(f"[bold]logs[/]    {info.log_dir}")
        console.print("REDIS_URL for clients: " + info.redis_url)
        console.print("press Ctrl-C to stop", style="dim")
        sys.stdout.flush()
        while True:
            stack._check_alive()
            time.sleep(0.5)
    except _Stop:
        pass
    except ProjError as err:
        console.print(f"[red]error:[/] {err}")
        stack.stop()
        sys.exit(1)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        console.print("stopped")


@main.command()
def demo() -> None:
    """Run the lead pipeline end to end on an embedded stack and print what happened."""
    from proj.demo import run_demo

    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        run_demo(_settings(), console=console)
    except ProjError as err:
        console.print(f"[red]error:[/] {err}")
        sys.exit(1)
    except _Stop:
        sys.exit(1)


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sim(args: tuple[str, ...]) -> None:
    """Run the simulated provider (see `proj sim --help`)."""
    from proj.sim.__main__ import main as sim_main

    sim_main(list(args))


@main.command()
def status() -> None:
    """Workers (queues, current and bounded concurrency, success rate) and rate limits."""
    from rich.table import Table

    from proj import status as st
    from proj.app import app

    settings = _settings()
    table = Table(title="workers")
    for col in ("node", "queues", "pool", "bounds", "success", "last change"):
        table.add_column(col)
    rows = _redis_call(lambda: st.workers(settings, app))
    for w in rows:
        table.add_row(w.node, w.queues, str(w.processes), w.bounds, w.success_rate, w.note)
    if not rows:
        table.caption = "no worker answered"
    console.print(table)
    limits = Table(title="rate limits (shared by all workers)")
    for col in ("dependency", "limit", "wait now"):
        limits.add_column(col)
    for lim in _redis_call(lambda: st.limits(settings)):
        limits.add_row(lim.name, lim.rate, f"{lim.wait_s:.2f} s")
    console.print(limits)


@main.group(invoke_without_command=True)
@click.pass_context
def breakers(ctx: click.Context) -> None:
    """List circuit breakers: state, failure rate, calls in window, when one may half-open."""
    if ctx.invoked_subcommand is not None:
        return
    import datetime as dt

    from rich.table import Table

    from proj.resilience import admin

    settings = _settings()
    table = Table(title="circuit breakers")
    for col in ("name", "state", "failure rate", "calls in window", "may half-open at", "probes"):
        table.add_column(col)
    for snap in _redis_call(lambda: admin.snapshots(settings)):
        policy = settings.breaker_policy(snap.name)
        at = "-"
        if snap.half_open_at is not None:
            at = dt.datetime.fromtimestamp(snap.half_open_at).strftime("%H:%M:%S")
        style = {"closed": "green", "half-open": "yellow"}.get(snap.state, "red")
        table.add_row(
            snap.name,
            f"[{style}]{snap.state}[/]",
            f"{snap.failure_rate:.0%} (opens above {policy.failure_rate:.0%})",
            f"{snap.calls} (judged from {policy.min_calls})",
            at,
            str(snap.probes_total),
        )
    console.print(table)


@breakers.command("open")
@click.argument("name")
def breakers_open(name: str) -> None:
    """Hold breaker NAME open until `proj breakers close NAME`."""
    from proj.resilience import admin

    moved = _redis_call(lambda: admin.force(_settings(), name, "forced-open"))
    console.print(f"breaker {name}: " + (" -> ".join(moved) if moved else "already forced open"))


@breakers.command("close")
@click.argument("name")
def breakers_close(name: str) -> None:
    """Close breaker NAME and forget its window."""
    from proj.resilience import admin

    moved = _redis_call(lambda: admin.force(_settings(), name, "closed"))
    console.print(f"breaker {name}: " + (" -> ".join(moved) if moved else "already closed"))


def _redis_call(fn: Callable[[], T]) -> T:
    import redis

    try:
        return fn()
    except (redis.ConnectionError, OSError) as err:
        console.print(f"[red]error:[/] cannot reach Redis at REDIS_URL: {err}")
        sys.exit(1)


def _settings() -> Settings:
    try:
        return get_settings()
    except ProjError as err:
        console.print(f"[red]error:[/] {err}")
        sys.exit(2)


def _install_batch_commands() -> None:
    from proj.batch.cli import install

    install(main)


_install_batch_commands()

if __name__ == "__main__":
    main()
