"""``proj quarantine list|show|replay|drop``: task messages workers could not run."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one line, however long


def _store() -> Any:
    import redis

    from proj.quarantine import Quarantine
    from proj.settings import get_settings

    s = get_settings()
    return Quarantine(
        redis.Redis.from_url(s.broker.redis_url),
        max_entries=s.quarantine.max,
        ttl_s=s.quarantine.ttl_s,
    )


def _fail(message: str) -> None:
    err_console.print(f"[red]error:[/] {escape(message)}")
    sys.exit(2)


def _age(at: float) -> str:
    s = max(0, int(time.time() - at))
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


@click.group("quarantine", invoke_without_command=True)
@click.pass_context
def quarantine_group(ctx: click.Context) -> None:
    """Task messages workers could not decode or validate, kept raw (a list by default)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(quarantine_list)


@quarantine_group.command("list")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
def quarantine_list(limit: int) -> None:
    """The oldest quarantined messages, and how many of each kind there ever were."""
    store = _store()
    entries = store.oldest(limit)
    total = store.count()
    counts = ", ".join(f"{k} {n}" for k, n in sorted(store.counts().items())) or "none"
    t = Table(title=f"quarantined messages ({len(entries)} of {total}; ever: {counts})")
    for col in ("id", "age", "queue", "task", "kind", "reason"):
        t.add_column(col, overflow="fold")
    for e in entries:
        t.add_row(
            e["id"],
            _age(e["at"]),
            escape(e["queue"]),
            escape(str(e.get("task"))),
            e["kind"],
            escape(e["reason"][:120]),
        )
    console.print(t)


@quarantine_group.command("show")
@click.argument("entry_id")
def quarantine_show(entry_id: str) -> None:
    """One message as JSON: queue, reason, headers, properties and body."""
    from proj.quarantine import body_of

    entry = _store().get(entry_id)
    if entry is None:
        _fail(f"no quarantined message {entry_id!r} (`proj quarantine list` shows them)")
        return
    body = body_of(entry)
    try:
        entry["body"] = body.decode()
    except UnicodeDecodeError:
        entry["body_base64"] = entry.pop("body")
    click.echo(json.dumps(entry, indent=2, ensure_ascii=True, default=str))


def _chosen(store: Any, entry_ids: tuple[str, ...], all_: bool) -> list[str]:
    if all_ == bool(entry_ids):
        _fail("give entry ids or --all (one of the two)")
    if all_:
        return [e["id"] for e in store.oldest(10**9)]
    missing = [i for i in entry_ids if store.get(i) is None]
    if missing:
        _fail(f"no quarantined message {missing[0]!r} (`proj quarantine list` shows them)")
    return list(entry_ids)


@quarantine_group.command("replay")
@click.argument("entry_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every quarantined message.")
def quarantine_replay(entry_ids: tuple[str, ...], all_: bool) -> None:
    """Publish messages again, as they came, to the queues they came from (after deploying
    the fix: a worker that knows the task, say). Each is taken by exactly one replay."""
    from proj.app import app
    from proj.quarantine_messages import republish

    store = _store()
    taken = store.take(_chosen(store, entry_ids, all_))
    done = 0
    for n, entry in enumerate(taken):
        try:
            republish(app, entry)
            done += 1
        except ValueError as err:  # a body cut to fit: kept, the rest go on
            store.restore([entry])
            err_console.print(f"[yellow]kept:[/] {escape(str(err))}")
        except Exception:
            store.restore(taken[n:])  # not published: kept for the next try
            raise
    console.print(f"replayed {done} message(s)")


@quarantine_group.command("drop")
@click.argument("entry_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every quarantined message.")
@click.option("--yes", is_flag=True, help="Do not ask (with --all).")
def quarantine_drop(entry_ids: tuple[str, ...], all_: bool, yes: bool) -> None:
    """Delete quarantined messages for good."""
    store = _store()
    ids = _chosen(store, entry_ids, all_)
    if all_ and not yes:
        click.confirm(f"Delete {len(ids)} quarantined message(s)?", abort=True)
    console.print(f"dropped {store.remove(ids)} message(s)")


def install(main: click.Group) -> None:
    main.add_command(quarantine_group)
