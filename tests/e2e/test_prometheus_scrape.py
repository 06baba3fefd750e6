"""A real Prometheus server scrapes ``proj up``'s metrics and Flower's, as config/prometheus.yml
sets it up, and answers every query of the Grafana dashboard.

Skipped, with the reason, where Debian's ``prometheus`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proj.stack.procs import free_port
from tests.e2e.conftest import clean_env, proj_exe, read_until, stop_up
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "proj", "scrape-me-please"


def _prometheus_config(metrics: str, flower: str, password_file: Path) -> dict[str, Any]:
    """config/prometheus.yml with this run's targets and password file, scraped every second."""
    config = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    for job in config["scrape_configs"]:
        target = {"proj": metrics, "flower": flower}[job["job_name"]]
        job["static_configs"] = [{"targets": [target]}]
        if "basic_auth" in job:
            job["basic_auth"]["password_file"] = str(password_file)
    return config


@pytest.fixture
def prometheus_exe() -> str:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("no prometheus on PATH (Debian: apt-get install prometheus): not scraped")
    return exe


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = clean_env(
        PROJ_STATE_DIR=str(tmp_path / "state"),
        PROJ_URGENT_CONCURRENCY="1",
        PROJ_BULK_CONCURRENCY="2",
        PROJ_METRICS_PORT=str(free_port()),
        FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD}",
    )
    proc = subprocess.Popen(
        [proj_exe(), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out = read_until(proc, "press Ctrl-C", timeout_s=120)
        found = {
            key: re.search(pattern, out)
            for key, pattern in {
                "flower": r"flower\s+http://(\S+)",
                "metrics": r"metrics\s+http://([^/\s]+)",
                "redis_url": r"REDIS_URL for clients: (\S+)",
            }.items()
        }
        assert all(found.values()), out
        yield {key: m.group(1) for key, m in found.items() if m is not None}
    finally:
        stop_up(proc)


@pytest.mark.slow
def test_prometheus_scrapes_proj_and_flower_and_answers_the_dashboard(
    tmp_path: Path, prometheus_exe: str, stack: dict[str, str]
) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", "from proj.tasks.demo import ping; print(ping.delay().get(60))"],
        env=clean_env(REDIS_URL=stack["redis_url"]),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert ran.stdout.strip() == "pong", ran.stdout + ran.stderr

    password_file = tmp_path / "flower_password"
    password_file.write_text(PASSWORD)
    password_file.chmod(0o600)
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(
        yaml.safe_dump(_prometheus_config(stack["metrics"], stack["flower"], password_file))
    )
    promtool = shutil.which("promtool")
    if promtool:  # the server's own checker accepts the file we derived from ours
        check = subprocess.run(
            [promtool, "check", "config", str(config_file)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("w")
    server = subprocess.Popen(
        [
            prometheus_exe,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:

        def both_up() -> bool:
            try:
                up = {r["metric"]["job"]: r["value"][1] for r in _query(base, "up")}
            except (httpx.HTTPError, json.JSONDecodeError):
                return False
            return up == {"proj": "1", "flower": "1"}

        wait_until(both_up, 60, "Prometheus to scrape proj and Flower")

        def seen(expr: str) -> bool:
            return bool(_query(base, expr))

        wait_until(lambda: seen('proj_tasks_total{task="proj.ping",state="succeeded"}'), 30, "ping")
        queues = {r["metric"]["queue"] for r in _query(base, "proj_queue_depth")}
        assert {"urgent", "bulk", "quarantine", "dead_letters"} <= queues, queues
        assert seen("flower_events_total"), "Flower's own metrics were not scraped"
        # Every panel of the Grafana dashboard is a query this server accepts.
        dashboard = json.loads((ROOT / "config" / "grafana" / "proj-dashboard.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                _query(base, target["expr"])
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
