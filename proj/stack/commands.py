"""The command lines of the processes proj starts (workers, Flower, ``proj metrics``), which
workers a local stack runs, and the control ping that says a worker is up. ``proj up``
(:mod:`proj.stack.up`), the benchmarks and the tests start workers the same way, and
``docker-compose.yml`` runs the same commands (tested)."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from proj.settings import Settings


@dataclass(frozen=True)
class WorkerSpec:
    """One ``celery worker``: its node name prefix, queues and pool size."""

    name: str
    queues: tuple[str, ...]
    concurrency: int
    pool: str = "prefork"
    extra_args: tuple[str, ...] = ()

    @property
    def nodename(self) -> str:
        return f"{self.name}@{socket.gethostname()}"


def worker_argv(spec: WorkerSpec, *, python: str = sys.executable) -> list[str]:
    """The command line of a worker; docker-compose.yml runs the same (tested)."""
    return [
        python,
        "-m",
        "celery",
        "-A",
        "proj",
        "worker",
        "-Q",
        ",".join(spec.queues),
        "-c",
        str(spec.concurrency),
        "-P",
        spec.pool,
        "-n",
        f"{spec.name}@%h",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        *spec.extra_args,
    ]


def flower_argv(port: int, *, db: Path | None = None, python: str = sys.executable) -> list[str]:
    """Flower's command line. Basic auth goes in the environment (FLOWER_BASIC_AUTH), never
    in argv, where ``ps`` would show it. With ``db``, Flower keeps its state (tasks and
    workers seen) in that file across restarts."""
    keep = ["--persistent=True", f"--db={db}"] if db is not None else []
    return [
        python, "-m", "celery", "-A", "proj", "flower", f"--port={port}", *keep,
        "--address=127.0.0.1",
    ]  # fmt: skip


def metrics_argv(port: int, *, python: str = sys.executable) -> list[str]:
    """``proj metrics`` on loopback (docs/metrics.md)."""
    return [python, "-m", "proj.cli", "metrics", "--host", "127.0.0.1", "--port", str(port)]


def api_argv(port: int, *, python: str = sys.executable) -> list[str]:
    """``proj api`` on loopback (keys and the callback secret in the environment)."""
    return [python, "-m", "proj.cli", "api", "--host", "127.0.0.1", "--port", str(port)]


def worker_queues(settings: Settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The queues of the urgent worker (the urgent queue, then every other urgent-class one)
    and of the bulk worker (the bulk queue, then every other declared queue)."""
    q = settings.queues
    declared = settings.queue_config.queues
    others = [n for n in sorted(declared) if n not in (q.urgent_queue, q.bulk_queue)]
    urgent = (q.urgent_queue, *(n for n in others if declared[n].kind == "urgent"))
    bulk = (q.bulk_queue, *(n for n in others if declared[n].kind != "urgent"))
    return urgent, bulk


def default_workers(settings: Settings) -> list[WorkerSpec]:
    """An urgent worker and a bulk worker, between them on every declared queue; with
    PROJ_ADAPTIVE_CONCURRENCY the bulk worker starts at PROJ_ADAPTIVE_START and finds its own
    size."""
    urgent_queues, bulk_queues = worker_queues(settings)
    bulk = WorkerSpec("bulk", bulk_queues, settings.stack.bulk_concurrency)
    if settings.adaptive.enabled:
        bulk = WorkerSpec("bulk", bulk_queues, settings.adaptive.start, extra_args=("--adaptive",))
    return [WorkerSpec("urgent", urgent_queues, settings.stack.urgent_concurrency), bulk]


def ping_workers(broker_url: str, nodenames: list[str], timeout_s: float = 1.0) -> set[str]:
    """Names of the given workers that answer a control ping."""
    from celery import Celery

    probe = Celery("proj-probe", broker=broker_url, set_as_current=False)
    probe.conf.accept_content = ["json"]
    try:
        replies = probe.control.ping(destination=nodenames, timeout=timeout_s) or []
    finally:
        probe.close()
    return {name for reply in replies for name in reply}
