"""The ``proj`` command line."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

import click
from rich.console import Console
from rich.markup import escape

from proj.errors import ProjError
from proj.settings import Settings, get_settings

console = Console(soft_wrap=True)
T = TypeVar("T")


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _hide_password(url: str) -> str:
    """A URL as a message may show it: its password replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable URL>"
    return url


class _Group(click.Group):
    """Every command: the whole configuration validated first; proj's own errors and an
    unreachable Redis end in one line and an exit status, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        import redis

        try:
            return super().invoke(ctx)
        except ProjError as err:
            console.print(f"[red]error:[/] {escape(str(err))}")
            sys.exit(2)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            url = _hide_password(get_settings().broker.redis_url)
            console.print(f"[red]error:[/] cannot reach Redis at {url}: {escape(str(err))}")
            sys.exit(1)


@click.group(cls=_Group)
def main() -> None:
    """proj: parallel AI and HTTP calls on Celery."""
    _settings()  # a bad value stops every command here, with one line


@main.command()
@click.option(
    "--broker",
    type=click.Choice(["redis", "rabbitmq"]),
    default="redis",
    show_default=True,
    help="rabbitmq: a local rabbitmq-server node (when installed) is the broker; Redis stays "
    "for results and state.",
)
def up(broker: str) -> None:
    """Start Redis (unless REDIS_URL is set), urgent and bulk workers, Flower and the API.

    Ctrl-C or SIGTERM stops every process it started.
    """
    from proj.stack.up import Stack

    settings = _settings()
    stack = Stack(settings, broker=broker, api=True)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        with console.status("starting ..."):
            info = stack.start()
        console.print(f"[bold]redis[/]   {_hide_password(info.redis_url)}")
        if info.broker_url:
            console.print(f"[bold]broker[/]  {_hide_password(info.broker_url)}")
        for name in info.workers:
            console.print(f"[bold]worker[/]  {name}")
        console.print(
            f"[bold]flower[/]  {info.flower_url}  user {info.flower_user} "
            f"password {info.flower_password}"
        )
        if info.metrics_url:
            console.print(f"[bold]metrics[/] {info.metrics_url}")
        if info.api_url:
            key = f"  key {info.api_key}" if info.api_key else ""
            console.print(f"[bold]api[/]     {info.api_url}{key}  (schema at /openapi.json)")
        if info.callback_secret:
            console.print(f"[bold]callbacks[/] signed with {info.callback_secret}")
        if info.sim_url:
            console.print(
                f"[bold]sim[/]     {info.sim_url}  (simulated provider; admin at /admin/stats, "
                f"header X-Admin-Key: {info.sim_admin_key})"
            )
        console.print(f"[bold]logs[/]    {info.log_dir}")
        console.print("REDIS_URL for clients: " + info.redis_url)
        if info.broker_url:
            console.print("CELERY_BROKER_URL for clients: " + info.broker_url)
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
    for col in ("name", "rule", "state", "failure rate", "calls in window", "next probe", "probes"):
        table.add_column(col)
    for view in _redis_call(lambda: admin.views(settings)):
        snap, policy = view.snapshot, view.policy
        at = "-"
        if snap.half_open_at is not None:
            at = dt.datetime.fromtimestamp(snap.half_open_at).strftime("%H:%M:%S")
        if policy is None:
            rule = "pybreaker (its own)"
        elif policy.fail_max is not None:
            rule = f"{policy.fail_max} failures in a row"
        else:
            rule = f"> {policy.failure_rate:.0%} of >= {policy.min_calls} in {policy.window_s:g}s"
        style = {"closed": "green", "half-open": "yellow"}.get(snap.state, "red")
        table.add_row(
            snap.name,
            rule,
            f"[{style}]{snap.state}[/]",
            f"{snap.failure_rate:.0%}" if snap.calls else "-",
            str(snap.calls),
            at,
            str(snap.probes_total),
        )
    console.print(table)


@breakers.command("open")
@click.argument("name")
def breakers_open(name: str) -> None:
    """Hold breaker NAME open until `proj breakers close NAME`."""
    moved = _force_breaker(name, "forced-open")
    console.print(f"breaker {name}: " + (" -> ".join(moved) if moved else "already forced open"))


@breakers.command("close")
@click.argument("name")
def breakers_close(name: str) -> None:
    """Close breaker NAME and forget its window."""
    moved = _force_breaker(name, "closed")
    console.print(f"breaker {name}: " + (" -> ".join(moved) if moved else "already closed"))


def _force_breaker(name: str, state: str) -> tuple[str, str] | None:
    from proj.resilience import admin
    from proj.signals import send_breaker_event

    try:
        moved = _redis_call(lambda: admin.force(_settings(), name, state))
    except ProjError as err:
        console.print(f"[red]error:[/] {err}")
        sys.exit(2)
    if moved is not None:
        fields = {"breaker": name, "old_state": moved[0], "new_state": moved[1], "forced": True}
        with contextlib.suppress(Exception):  # Flower's event: nice to have, not needed
            send_breaker_event(fields)
    return moved


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
        console.print(f"[red]error:[/] {escape(str(err))}")
        sys.exit(2)


def _install_batch_commands() -> None:
    from proj.api.cli import install as install_api
    from proj.batch.cli import install
    from proj.metrics_cli import install as install_metrics
    from proj.quarantine_cli import install as install_quarantine
    from proj.status_cli import install as install_status

    install(main)
    install_quarantine(main)
    install_metrics(main)
    install_status(main)
    install_api(main)


_install_batch_commands()

if __name__ == "__main__":
    main()
