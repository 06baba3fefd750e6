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

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(Path(sys.executable).parent / "proj"), "status", *args],
                env=clean_env(**env, COLUMNS="200"),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        out = run()
        as_json = run("--json")
    finally:
        pool.kill_all()
    assert as_json.returncode == 0, as_json.stderr
    snap = json.loads(as_json.stdout)
    assert {w["node"] for w in snap["workers"]} == {pool.nodename("fixed"), pool.nodename("adapt")}
    assert snap["parked"] == {"breaker:ai": 1}
    assert [lim["name"] for lim in snap["rate_limits"]] == ["ai"]
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    fixed = next(line for line in lines if pool.nodename("fixed") in line)
    adapt = next(line for line in lines if pool.nodename("adapt") in line)
    assert "urgent" in fixed and "fixed" in fixed and " 2 " in fixed
    assert "bulk" in adapt and "3" in adapt and "2..8 adaptive" in adapt
    assert any("ai" in line and "50/s" in line for line in lines)
    assert any("breaker:ai" in line and " 1 " in line for line in lines), out.stdout


def test_cli_status_counts_every_priority_list_of_a_queue(
    redis_server: object, tmp_path: Path
) -> None:
    """No worker runs: what waits stays, in the lists kombu keeps per priority step."""
    url = redis_server.url  # type: ignore[attr-defined]
    r = redis_lib.Redis.from_url(url)
    r.flushdb()
    for _ in range(3):
        r.lpush("bulk", "{}")
    r.lpush("bulk\x06\x169", "{}")
    r.lpush("urgent\x06\x163", "{}")
    out = subprocess.run(
        [str(Path(sys.executable).parent / "proj"), "status", "--json"],
        env=clean_env(REDIS_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    r.flushdb()
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert snap["queues"] == {
        "urgent": 1,
        "bulk": 4,
        "compliance": 0,  # every declared queue
        "quarantine": 0,
        "dead_letters": 0,
    }
    assert snap["workers"] == [] and snap["batches"] == []
