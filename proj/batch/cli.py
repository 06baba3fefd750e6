"""Batch and dead-letter commands: ``proj submit``, ``proj batches``, ``proj batch ...``,
``proj dlq ...``."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from proj.batch.jsonl import MAX_LINE_BYTES, read_jsonl
from proj.batch.store import Progress as BatchProgress

__all__ = ["MAX_LINE_BYTES", "install", "read_jsonl", "show_progress"]

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _shown(value: Any) -> str:
    """A value as a message may show it: cut to 200 characters, never read as rich markup."""
    text = repr(value)
    text = text if len(text) <= 200 else f"{text[:200]}... ({len(text)} characters)"
    return escape(text)


def show_progress(handle: Any, *, timeout_s: float | None = None) -> BatchProgress:
    """A live bar with rate and ETA until the batch finishes; a lost Redis connection is a
    line, and the bar carries on once it is back."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>7.1f}/s"),
        TimeRemainingColumn(),
        TextColumn(
            "failed {task.fields[failed]}  in flight {task.fields[in_flight]}  "
            "waiting {task.fields[deferred]}  cached {task.fields[cached]}"
        ),
    )
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task(
            handle.batch_id, total=None, rate=0.0, failed=0, in_flight=0, deferred=0, cached=0
        )

        def update(p: BatchProgress) -> None:
            elapsed = max(1e-6, (p.finished or p.updated or p.started) - p.started)
            bar.update(
                task,
                total=p.total,
                completed=p.done + p.failed,
                rate=(p.done + p.failed) / elapsed,
                failed=p.failed,
                in_flight=p.in_flight,
                deferred=p.deferred,
                cached=p.cached,
            )

        def connection(error: Exception | None) -> None:
            if error is None:
                bar.console.print("[green]reconnected[/] to Redis")
            else:
                reason = escape(f"{type(error).__name__}: {error}"[:200])
                bar.console.print(f"[yellow]Redis unreachable[/] ({reason}): reconnecting ...")

        final: BatchProgress = handle.wait(timeout_s, on_progress=update, on_connection=connection)
        return final


def progress_table(rows: list[BatchProgress]) -> Table:
    t = Table(title="batches")
    for col in ("id", "pipeline", "status", "done", "failed", "in flight", "waiting", "started"):
        t.add_column(col)
    for p in rows:
        started = dt.datetime.fromtimestamp(p.started).strftime("%Y-%m-%d %H:%M:%S")
        t.add_row(
            p.batch_id,
            p.pipeline,
            p.status,
            f"{p.done}/{p.total}",
            str(p.failed),
            str(p.in_flight),
            str(p.deferred),
            started,
        )
    return t


@click.command("submit")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pipeline", "-p", required=True, help="leads, company or documents")
@click.option("--urgent", is_flag=True, help="Run on the urgent queue.")
@click.option("--batch-id", default=None, help="Reuse an id to make the submission idempotent.")
@click.option("--no-wait", is_flag=True, help="Print the batch id and return.")
@click.option(
    "--fresh", is_flag=True, help="Compute every item again, even those the result cache holds."
)
def submit_cmd(
    path: Path, pipeline: str, urgent: bool, batch_id: str | None, no_wait: bool, fresh: bool
) -> None:
    """Submit the items of a JSON-lines file as a batch and show its progress.

    Invalid lines are rejected by line number and the rest run. Exits 1 if items failed,
    2 if nothing could be submitted.
    """
    from proj.batch import submit

    numbered, bad = read_jsonl(path)
    for msg in bad:
        err_console.print(f"[yellow]rejected[/] {msg}")
    lines = [n for n, _ in numbered]
    try:
        handle = submit(
            pipeline,
            [item for _, item in numbered],
            urgent=urgent,
            batch_id=batch_id,
            fresh=fresh,
        )
    except ValueError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(2)
    for r in handle.rejected:
        line = lines[r.index]
        err_console.print(
            f"[yellow]rejected[/] line {line}: field {r.field!r} {r.reason} (got {_shown(r.value)})"
        )
    if handle.accepted == 0:
        err_console.print("[red]nothing to run[/]")
        sys.exit(2)
    note = f" ({handle.duplicates} duplicates run once)" if handle.duplicates else ""
    console.print(
        f"batch {handle.batch_id}: {handle.accepted} items{note}"
        + (" (already submitted: watching it)" if handle.existing else "")
    )
    if no_wait:
        return
    final = show_progress(handle)
    elapsed = (final.finished or final.updated) - final.started
    console.print(
        f"done {final.done}, failed {final.failed}, cached {final.cached}, "
        f"in {elapsed:.1f} s"
        + (f"; see `proj batch show {final.batch_id}`" if final.failed else "")
    )
    sys.exit(1 if final.failed else 0)


@click.command("batches")
@click.option("--limit", default=20, show_default=True)
def batches_cmd(limit: int) -> None:
    """List recent batches."""
    from proj.batch import list_batches

    console.print(progress_table(list_batches(limit)))


@click.group("batch")
def batch_group() -> None:
    """Show or resume one batch."""


@batch_group.command("show")
@click.argument("batch_id")
def batch_show(batch_id: str) -> None:
    """One batch, with its failures."""
    from proj.batch.submit import BatchHandle

    progress, errors = BatchHandle(batch_id).report()
    console.print(progress_table([progress]))
    if errors:
        t = Table(title="failures")
        for col in ("item", "kind", "attempts", "message"):
            t.add_column(col)
        for idx, e in sorted(errors.items()):
            t.add_row(
                str(idx), str(e.get("kind")), str(e.get("attempts")), str(e.get("message"))[:200]
            )
        console.print(t)


@batch_group.command("resume")
@click.argument("batch_id")
@click.option("--no-wait", is_flag=True)
def batch_resume(batch_id: str, no_wait: bool) -> None:
    """Finish a batch whose submitter or workers died; done items are not run again."""
    from proj.batch import resume

    handle = resume(batch_id)
    console.print(f"batch {batch_id}: resumed")
    if not no_wait:
        final = show_progress(handle)
        sys.exit(1 if final.failed else 0)


@click.group("dlq")
def dlq_group() -> None:
    """Dead letters: items that failed after their retries."""


def _dlq() -> Any:
    import redis

    from proj.batch.dlq import DeadLetters
    from proj.settings import get_settings

    return DeadLetters(redis.Redis.from_url(get_settings().broker.redis_url))


@dlq_group.command("list")
@click.option("--batch", "batch_id", default=None)
def dlq_list(batch_id: str | None) -> None:
    entries = _dlq().entries(batch_id)
    t = Table(title=f"dead letters ({len(entries)})")
    for col in ("id", "pipeline", "kind", "attempts", "message", "item"):
        t.add_column(col)
    for e in entries:
        t.add_row(
            e["id"],
            e["pipeline"],
            str(e["error"].get("kind")),
            str(e.get("attempts")),
            str(e["error"].get("message"))[:120],
            json.dumps(e["item"])[:80],
        )
    console.print(t)


@dlq_group.command("replay")
@click.option("--batch", "batch_id", default=None, help="Only this batch's dead letters.")
@click.argument("entry_ids", nargs=-1)
@click.option("--no-wait", is_flag=True)
def dlq_replay(batch_id: str | None, entry_ids: tuple[str, ...], no_wait: bool) -> None:
    """Run dead-lettered items again (after fixing the cause), as a new batch."""
    from proj.batch.replay import replay

    try:
        handle = replay(batch_id=batch_id, entry_ids=list(entry_ids) or None)
    except ValueError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(2)
    console.print(f"replaying as batch {handle.batch_id}")
    if not no_wait:
        final = show_progress(handle)
        sys.exit(1 if final.failed else 0)


@dlq_group.command("purge")
@click.option("--batch", "batch_id", default=None)
@click.confirmation_option(prompt="Delete these dead letters?")
def dlq_purge(batch_id: str | None) -> None:
    console.print(f"purged {_dlq().purge(batch_id)} dead letters")


def install(main: click.Group) -> None:
    for cmd in (submit_cmd, batches_cmd, batch_group, dlq_group):
        main.add_command(cmd)
