"""Flower under ``proj up``, driven in a real headless Chromium as an operator uses it.

It logs in with basic auth and opens the workers, tasks, task and broker pages, and finds both
queues, both workers, a task that just ran and a batch runner's progress. Screenshots go to the
test's directory, and to ``PROJ_SCREENSHOTS_DIR`` when set (``docs/img`` holds the ones the
docs show: ``PROJ_SCREENSHOTS_DIR=docs/img make test PYTEST_ARGS=-k flower_in``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import clean_env, proj_exe, read_until, stop_up

USER, PASSWORD = "ops", "correct-horse"


def _chromium() -> str | None:
    for candidate in (os.environ.get("PROJ_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium): Flower not driven")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _start_work(redis_url: str, sim_url: str, sim_key: str, env: dict[str, str]) -> tuple[str, str]:
    """From a client process: a task run to its end, then a batch left running (its calls
    slowed down on the simulator, so that Flower can be watched while it runs); their ids."""
    code = (
        "from proj import batch\n"
        "from proj.sim.admin import SimAdmin\n"
        "from proj.tasks.demo import ping\n"
        "r = ping.delay()\n"
        "assert r.get(timeout=60) == 'pong'\n"
        f"SimAdmin({sim_url!r}, {sim_key!r}).configure("
        "{'routes': {'company': {'latency_ms': 800}}})\n"
        "items = [{'domain': f'flower{i}.com'} for i in range(240)]\n"
        "h = batch.submit('company', items, fresh=True)\n"
        "print(r.id, h.batch_id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    task_id, batch_id = out.stdout.split()[-2:]
    return task_id, batch_id


def _reload_until(page: Any, text: re.Pattern[str], timeout_s: float = 30) -> None:
    """Flower renders a task's page once: reload it until ``text`` is on it."""
    deadline = time.monotonic() + timeout_s
    while not page.get_by_text(text).count():
        assert time.monotonic() < deadline, f"{text.pattern!r} not on {page.url}"
        time.sleep(0.5)
        page.reload()


@pytest.mark.slow
def test_flower_in_a_browser_shows_workers_queues_tasks_and_batch_progress(
    tmp_path: Path, browser: Any
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    env = clean_env(
        PROJ_STATE_DIR=str(tmp_path / "state"),
        PROJ_URGENT_CONCURRENCY="1",
        PROJ_BULK_CONCURRENCY="2",
        PROJ_METRICS_PORT="0",
        PROJ_BATCH_CONCURRENCY="20",
        FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD}",
    )
    proc = subprocess.Popen(
        [proj_exe(), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out = read_until(proc, "press Ctrl-C", timeout_s=120)
        flower = re.search(r"flower\s+(http://\S+)", out)
        redis_url = re.search(r"REDIS_URL for clients: (\S+)", out)
        workers = re.findall(r"worker\s+(\S+@\S+)", out)
        sim = re.search(r"sim\s+(http://\S+).*X-Admin-Key: (\S+)\)", out)
        assert flower and redis_url and sim and len(workers) == 2, out
        url = flower.group(1)
        task_id, batch_id = _start_work(redis_url.group(1), sim.group(1), sim.group(2), env)

        # Without credentials Flower answers 401, and the browser shows no page.
        anonymous = browser.new_context()
        assert anonymous.request.get(url + "/workers").status == 401
        with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):
            anonymous.new_page().goto(url + "/workers")
        anonymous.close()

        ctx = browser.new_context(
            http_credentials={"username": USER, "password": PASSWORD},
            viewport={"width": 1280, "height": 760},
        )
        page = ctx.new_page()

        assert page.goto(url + "/workers").status == 200
        for name in workers:
            page.get_by_text(name).first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "flower-workers.png"), full_page=True)

        assert page.goto(url + "/tasks").status == 200
        page.get_by_text(task_id).first.wait_for(timeout=30_000)
        page.get_by_text("proj.batch.run").first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "flower-tasks.png"), full_page=True)

        # The batch runner's page while it runs: its task-progress events put it in state
        # PROGRESS with the batch's counts; when it ends, SUCCESS and its result.
        page.goto(url + "/tasks?name=proj.batch.run")
        link = page.get_by_role("link", name=re.compile(r"^[0-9a-f-]{36}$")).first
        link.wait_for(timeout=30_000)
        link.click()
        page.wait_for_url(re.compile(r"/task/"))
        progress = re.compile(rf"batch {batch_id}: [1-9]\d* done, 0 failed, \d+ pending of 240")
        _reload_until(page, progress)
        page.get_by_text("PROGRESS", exact=True).first.wait_for(timeout=5_000)
        page.screenshot(path=str(shots / "flower-batch-progress.png"), full_page=True)
        _reload_until(page, re.compile(r"'processed': \d+, 'finished': True"), timeout_s=90)
        page.get_by_text("SUCCESS", exact=True).first.wait_for(timeout=5_000)

        assert page.goto(url + "/broker").status == 200
        for queue in ("urgent", "bulk"):
            page.get_by_role("cell", name=queue, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "flower-broker.png"), full_page=True)
        ctx.close()
    finally:
        stop_up(proc)
    assert proc.returncode == 0
    for png in shots.iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    if target := os.environ.get("PROJ_SCREENSHOTS_DIR"):
        Path(target).mkdir(parents=True, exist_ok=True)
        for png in shots.iterdir():
            shutil.copy(png, Path(target) / png.name)
