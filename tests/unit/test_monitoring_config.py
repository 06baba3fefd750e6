"""config/prometheus.yml and the Grafana dashboard ask only for metrics proj serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def documented_metrics() -> set[str]:
    """The metric names of docs/metrics.md's table."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(proj_[a-z_]+)` \|", text, flags=re.M))


def base_name(sample: str) -> str:
    """A sample's metric family: ``_bucket``, ``_count``, ``_sum``, ``_created`` and a
    counter's ``_total`` belong to it."""
    return re.sub(r"_(bucket|count|sum|created|total)$", "", sample)


def test_prometheus_scrapes_proj_and_flower_without_a_password_in_the_file() -> None:
    config = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"proj", "flower"}
    assert jobs["proj"]["static_configs"][0]["targets"]
    auth = jobs["flower"]["basic_auth"]
    assert "password_file" in auth and "password" not in auth


def test_dashboard_panels_query_documented_metrics() -> None:
    dashboard = json.loads((ROOT / "config" / "grafana" / "proj-dashboard.json").read_text())
    documented = documented_metrics()
    assert len(documented) >= 10
    used = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= {base_name(m) for m in re.findall(r"proj_[a-z_]+", target["expr"])}
    assert used <= {base_name(m) for m in documented}, used - documented
    for wanted in (
        "proj_queue_depth",
        "proj_breaker_state",
        "proj_worker_pool_target",
        "proj_tasks",
    ):
        assert wanted in used
