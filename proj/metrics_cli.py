"""``proj metrics``: serve proj's Prometheus metrics (:mod:`proj.metrics`) over HTTP."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import click
from rich.console import Console

console = Console(soft_wrap=True)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=9808, show_default=True, type=click.IntRange(1, 65535), help="TCP port."
)
def metrics(host: str, port: int) -> None:
    """Serve Prometheus metrics on http://HOST:PORT/metrics until Ctrl-C or SIGTERM.

    Queue depths, breakers, adaptive workers, rate-limit waits, batches in progress (read
    from Redis at each scrape) and tasks per name and state with their run time (from the
    workers' task events). docs/metrics.md lists every metric."""
    from prometheus_client import start_http_server

    from proj import metrics as m
    from proj.app import app
    from proj.settings import get_settings

    registry, events = m.registry(get_settings(), app)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        console.print(f"[red]error:[/] cannot listen on {host}:{port}: {err.strerror or err}")
        sys.exit(1)
    events.start()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    console.print(f"metrics on http://{host}:{port}/metrics  (Ctrl-C to stop)")
    sys.stdout.flush()
    stop.wait()
    events.stop()
    server.shutdown()
    thread.join(5)
    console.print("stopped")


def install(main: click.Group) -> None:
    main.add_command(metrics)
