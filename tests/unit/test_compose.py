"""docker-compose.yml runs what the code expects (no Docker engine here: parse and compare)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from proj.settings import load_settings
from proj.stack.up import WorkerSpec, default_workers, flower_argv, worker_argv

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(doc["services"])


def _celery(argv: list[str]) -> list[str]:
    """``python -m celery ...`` as the ``celery`` console script the image runs."""
    assert argv[1:3] == ["-m", "celery"]
    return ["celery", *argv[3:]]


def test_compose_redis_is_durable_non_evicting_and_health_checked(services: dict[str, Any]) -> None:
    redis = services["redis"]
    cmd = redis["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_compose_workers_run_the_code_s_worker_command(services: dict[str, Any]) -> None:
    defaults = {w.name: w for w in default_workers(load_settings())}
    for name in ("urgent", "bulk"):
        service = services[f"worker-{name}"]
        assert service["command"] == _celery(worker_argv(defaults[name]))
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_flower_has_basic_auth_from_env_not_argv(services: dict[str, Any]) -> None:
    flower = services["flower"]
    assert flower["command"] == [*_celery(flower_argv(5555))[:-1], "--address=0.0.0.0"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH")
    assert not any("auth" in part for part in flower["command"])


def test_compose_environment_is_valid_settings(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, service in services.items():
        if name == "redis":
            continue
        env = {k: str(v) for k, v in service["environment"].items() if not str(v).startswith("$")}
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        assert settings.broker.redis_url == env["REDIS_URL"]


def test_compose_services_share_one_image_built_from_the_dockerfile(
    services: dict[str, Any],
) -> None:
    built = [s for s in services.values() if "build" in s]
    assert len(built) == 3
    assert {s["build"] for s in built} == {"."}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY config ./config" in dockerfile
    assert "pip install ." in dockerfile


def test_worker_argv_has_queue_concurrency_and_name() -> None:
    argv = worker_argv(WorkerSpec("bulk", ("bulk",), 20))
    assert argv[argv.index("-Q") + 1] == "bulk"
    assert argv[argv.index("-c") + 1] == "20"
    assert argv[argv.index("-n") + 1] == "bulk@%h"


def test_adaptive_setting_makes_the_bulk_worker_adaptive() -> None:
    urgent, bulk = default_workers(load_settings(adaptive={"enabled": True, "start": 5}))
    assert "--adaptive" in worker_argv(bulk) and "--adaptive" not in worker_argv(urgent)
    assert bulk.concurrency == 5
