"""``proj up`` on the embedded Redis binary, as a new user runs it, and its clean shutdown."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from proj.stack.redis_server import embedded_redis_server
from tests.e2e.conftest import (
    alive,
    assert_all_gone,
    clean_env,
    descendants,
    proj_exe,
    read_until,
    stop_up,
)


def _submit_through_the_api(url: str, key: str) -> None:
    """The session's key lets a batch in through ``proj api``; it runs to the end."""
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.post(url + "/v1/batches", json={}, timeout=10).status_code == 401
    items = [{"domain": "acme.com"}, {"domain": "globex.com"}]
    r = httpx.post(
        url + "/v1/batches", json={"pipeline": "company", "items": items}, headers=auth, timeout=10
    )
    assert r.status_code == 202, r.text
    status = r.json()["status_url"]
    deadline = time.monotonic() + 60
    while httpx.get(status, headers=auth, timeout=10).json()["status"] != "finished":
        assert time.monotonic() < deadline, "the batch did not finish"
        time.sleep(0.2)
    assert httpx.get(status, headers=auth, timeout=10).json()["done"] == 2


@pytest.mark.slow
def test_up_on_embedded_redis_then_sigterm_leaves_no_process(tmp_path: Path) -> None:
    env = clean_env(
        PROJ_REDIS_SERVER="embedded",  # the binary a machine without Redis uses
        PROJ_STATE_DIR=str(tmp_path / "state"),
        PROJ_URGENT_CONCURRENCY="1",
        PROJ_BULK_CONCURRENCY="2",
        FLOWER_BASIC_AUTH="ops:correct-horse",
    )
    proc = subprocess.Popen(
        [proj_exe(), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out = read_until(proc, "press Ctrl-C", timeout_s=90)
        flower = re.search(r"flower\s+(http://\S+)", out)
        assert flower, out
        assert "correct-horse" in out  # printed once for the operator, never in argv
        procs = descendants(proc.pid)
        exes = {os.path.realpath(f"/proc/{p}/exe") for p in procs if alive(p)}
        assert str(embedded_redis_server().resolve()) in exes
        for p in procs:
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes() if alive(p) else b""
            assert b"correct-horse" not in cmdline
        url = flower.group(1)
        assert httpx.get(url + "/api/workers", timeout=5).status_code == 401
        workers = httpx.get(url + "/api/workers", auth=("ops", "correct-horse"), timeout=10)
        assert workers.status_code == 200
        # Flower started once the workers answered: its broker view has both their queues.
        queues = httpx.get(url + "/api/queues/length", auth=("ops", "correct-horse"), timeout=10)
        assert queues.status_code == 200, (queues.status_code, queues.text[:300])
        names = {q["name"] for q in queues.json()["active_queues"]}
        assert {"urgent", "bulk"} <= names, queues.text
        metrics = re.search(r"metrics\s+(http://\S+)", out)
        assert metrics, out
        assert "proj_queue_depth" in httpx.get(metrics.group(1), timeout=10).text
        api = re.search(r"api\s+(http://\S+)\s+key (\S+)", out)
        assert api, out
        for p in procs:
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes() if alive(p) else b""
            assert api.group(2).encode() not in cmdline
        _submit_through_the_api(api.group(1), api.group(2))
        assert len(procs) >= 1 + 2 + 3 + 1 + 1 + 1  # redis, 2 workers, flower, metrics, api
    finally:
        stop_up(proc)
    assert_all_gone(proc, procs, settle_s=0.5)
    # Flower kept what it saw (--persistent), in the state directory.
    assert list((tmp_path / "state").glob("flower.db*")), list((tmp_path / "state").iterdir())


@pytest.mark.slow
def test_up_with_rabbitmq_as_broker_runs_work_and_leaves_nothing(tmp_path: Path) -> None:
    from proj.stack.rabbitmq import find_rabbitmq_server

    if find_rabbitmq_server() is None:
        pytest.skip("rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)")
    env = clean_env(
        PROJ_STATE_DIR=str(tmp_path / "state"),
        PROJ_URGENT_CONCURRENCY="1",
        PROJ_BULK_CONCURRENCY="1",
        FLOWER_BASIC_AUTH="ops:correct-horse",
    )
    proc = subprocess.Popen(
        [proj_exe(), "up", "--broker", "rabbitmq"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out = read_until(proc, "press Ctrl-C", timeout_s=120)
        broker = re.search(r"CELERY_BROKER_URL for clients: (amqp://\S+)", out)
        redis_url = re.search(r"REDIS_URL for clients: (\S+)", out)
        assert broker and redis_url, out
        client_env = clean_env(CELERY_BROKER_URL=broker.group(1), REDIS_URL=redis_url.group(1))
        ran = subprocess.run(
            [
                sys.executable,
                "-c",
                "from proj.tasks.demo import urgent_work, work\n"
                "print(work.delay(0).get(timeout=60)['queue'], "
                "urgent_work.delay(0).get(timeout=60)['queue'])\n",
            ],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.stdout.split() == ["bulk", "urgent"], ran.stdout + ran.stderr
        status = subprocess.run(
            [proj_exe(), "status", "--json"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        snap = json.loads(status.stdout)
        assert snap["queues"]["bulk"] == 0 and snap["queues"]["urgent"] == 0  # read on RabbitMQ
        procs = descendants(proc.pid)
    finally:
        stop_up(proc)
    assert_all_gone(proc, procs, settle_s=1.0)
    # Nothing of its node is left either (it ran under its own name and port mapper).
    beams = subprocess.run(["pgrep", "-f", str(tmp_path / "state")], capture_output=True, text=True)
    assert beams.stdout.strip() == "", beams.stdout
