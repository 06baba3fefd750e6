"""``proj submit`` end to end: invalid lines rejected by number, the rest run, exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis as redis_lib

from proj.sim.admin import SimAdmin
from tests.support import WorkerPool


def _proj(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "proj"), *args],
        env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_submit_rejects_invalid_lines_by_number_and_runs_the_rest(
    workers: WorkerPool,
    sim: SimAdmin,
    provider_env: dict[str, str],
    redis_client: redis_lib.Redis,
    tmp_path: Path,
) -> None:
    workers.start("bulk", ("bulk",), concurrency=2, env=provider_env)
    lines = [json.dumps({"email": f"ann{i}@acme{i}.com", "message": "pricing?"}) for i in range(8)]
    lines[2] = "{not json"
    lines[5] = json.dumps({"email": "no-at-sign"})
    lines.insert(6, "")  # blank lines are skipped, line numbers still count
    path = tmp_path / "leads.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = _proj("submit", str(path), "--pipeline", "leads", env=provider_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "line 3: not JSON" in out.stderr
    assert "line 6: field 'email' is not a valid email address (got 'no-at-sign')" in out.stderr
    assert "done 6, failed 0" in out.stdout
    assert sim.count("person") == 6
    listing = _proj("batches", env=provider_env)
    assert "leads" in listing.stdout and "6/6" in listing.stdout


def test_submit_exits_nonzero_when_items_fail(
    workers: WorkerPool,
    sim: SimAdmin,
    provider_env: dict[str, str],
    redis_client: redis_lib.Redis,
    tmp_path: Path,
) -> None:
    env = {**provider_env, "PROJ_TASK_MAX_RETRIES": "0", "PROJ_BREAKER_ENABLED": "false"}
    workers.start("bulk", ("bulk",), concurrency=2, env=env)
    sim.configure({"routes": {"company": {"error_rate": 1.0, "error_status": 503}}})
    path = tmp_path / "domains.jsonl"
    path.write_text("\n".join(json.dumps({"domain": f"x{i}.com"}) for i in range(3)))
    out = _proj("submit", str(path), "--pipeline", "company", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "failed 3" in out.stdout
    show = _proj("batch", "show", out.stdout.split()[1].rstrip(":"), env=env)
    assert "server_error" in show.stdout
    dlq = _proj("dlq", "list", env=env)
    assert "x0.com" in dlq.stdout
