"""Shared set-up for benchmarks: a private Redis and worker processes, all torn down after."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis

from proj.stack.procs import ManagedProcess, wait_for
from proj.stack.redis_server import RedisServer
from proj.stack.up import WorkerSpec, ping_workers, worker_argv

ROOT = Path(__file__).resolve().parents[1]
PROVIDERS = ("ai", "company", "person")  # proj's own dependencies on the provider


@contextlib.contextmanager
def private_redis() -> Iterator[RedisServer]:
    """A Redis of the benchmark's own on a free port; REDIS_URL points at it."""
    with tempfile.TemporaryDirectory(prefix="proj-bench-") as tmp:
        server = RedisServer(Path(tmp), appendonly=False).start()
        os.environ["REDIS_URL"] = server.url
        try:
            yield server
        finally:
            server.stop()


class Workers:
    """Worker processes started for one scenario and stopped together."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[ManagedProcess] = []

    def start(
        self, spec: WorkerSpec, *, app: str = "proj", env: dict[str, str] | None = None
    ) -> None:
        argv = worker_argv(spec)
        argv[argv.index("-A") + 1] = app
        full = {**os.environ, **(env or {})}
        if "PROVIDER_BASE_URL" in full:
            # The benchmarks' simulator takes any key; a worker checks that one is set.
            full.setdefault("PROVIDER_API_KEY", "sk-bench-simulator")
        else:  # no provider: proj's dependencies off, or the worker refuses to start
            full.setdefault("PROJ_DEPENDENCIES", json.dumps(dict.fromkeys(PROVIDERS)))
        proc = ManagedProcess(
            spec.name, argv, env=full, cwd=ROOT, log_path=self.log_dir / f"{spec.name}.log"
        ).start()
        self.procs.append(proc)
        url = os.environ["REDIS_URL"]

        def up() -> bool:
            if not proc.alive():
                raise RuntimeError(f"worker {spec.name} exited:\n{proc.log_tail()}")
            return spec.nodename in ping_workers(url, [spec.nodename], 0.5)

        wait_for(up, timeout_s=60, what=spec.nodename, interval_s=0.2)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.stop(timeout_s=10)
        self.procs.clear()


def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def turning_order(i: int, sides: tuple[str, ...]) -> tuple[str, ...]:
    """Round ``i``'s order of the compared sides: each first in turn, forwards then backwards,
    so drift on a shared machine hits every side alike."""
    turned = sides[i % len(sides) :] + sides[: i % len(sides)]
    return turned if (i // len(sides)) % 2 == 0 else turned[::-1]
