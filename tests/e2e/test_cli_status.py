"""``proj status`` against real workers: queues, pool size, adaptive bounds, limits and the
deferred tasks parked in Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import redis as redis_lib

from proj.parking import Parking
from tests.e2e.conftest import clean_env
from tests.support import WorkerPool, wait_until


def test_cli_status_shows_workers_and_limits(redis_server: object, tmp_path: Path) -> None:
    url = redis_server.url  # type: ignore[attr-defined]
    redis_lib.Redis.from_url(url).flushdb()
    env = {"REDIS_URL": url, "PROJ_RATE_LIMITS": json.dumps({"ai": "50/s"})}
    pool = WorkerPool(tmp_path / "logs")
    try:
        pool.start("fixed", ("urgent",), concurrency=2, env=env)
        pool.start(
            "adapt",
            ("bulk",),
            concurrency=3,
            env=env,
            extra_args=("--adaptive", "--adaptive-max", "8"),
        )
        r = redis_lib.Redis.from_url(url)
        # A mover leaves it be: its breaker is closed, but it is due in an hour.
        Parking(r).park("breaker:ai", time.time() + 3600, '{"task": "proj.ping"}')
        wait_until(
            lambda: r.exists(f"proj:cc:{pool.nodename('adapt')}:status"),
            10,
            "the controller's first status",
        )
        out = subprocess.run(
            [str(Path(sys.executable).parent / "proj"), "status"],
            env=clean_env(**env, COLUMNS="200"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        pool.kill_all()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    fixed = next(line for line in lines if pool.nodename("fixed") in line)
    adapt = next(line for line in lines if pool.nodename("adapt") in line)
    assert "urgent" in fixed and "fixed" in fixed and " 2 " in fixed
    assert "bulk" in adapt and "3" in adapt and "2..8 adaptive" in adapt
    assert any("ai" in line and "50/s" in line for line in lines)
    assert any("breaker:ai" in line and " 1 " in line for line in lines), out.stdout
