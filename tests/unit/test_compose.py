"""docker-compose.yml runs what the code expects, as a production deployment needs it: parsed
and compared here; ``docker compose config`` checks it too where Docker is installed."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from proj.settings import load_settings
from proj.stack.up import WorkerSpec, default_workers, flower_argv, worker_argv

ROOT = Path(__file__).resolve().parents[2]
#: What an operator exports before `docker compose up` (fake values).
OPERATOR_ENV = {
    "REDIS_PASSWORD": "redis-pw-123",
    "POSTGRES_PASSWORD": "pg-pw-456",
    "FLOWER_PASSWORD": "flower-pw-789",
    "PROVIDER_API_KEY": "sk-provider-000",
    "GRAFANA_ADMIN_PASSWORD": "grafana-pw",
}
STATE_DIR = "/var/lib/proj"


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` against ``env``."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError(f"{name} is required: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(doc["services"])


def _celery(argv: list[str]) -> list[str]:
    """``python -m celery ...`` as the ``celery`` console script the image runs."""
    assert argv[1:3] == ["-m", "celery"]
    return ["celery", *argv[3:]]


def test_every_service_restarts_and_the_long_running_ones_are_health_checked(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
    for name in ("redis", "postgres", "worker-urgent", "worker-bulk", "flower", "metrics"):
        assert services[name]["healthcheck"]["test"], name


def test_compose_redis_is_durable_non_evicting_with_a_password_outside_argv(
    services: dict[str, Any],
) -> None:
    redis = services["redis"]
    script = redis["command"][-1]
    argv = shlex.split(script.split("exec ", 1)[1])
    assert argv[0] == "redis-server"
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"
    assert "requirepass" in script and "--requirepass" not in argv  # from a file, not argv
    assert "REDISCLI_AUTH" in redis["healthcheck"]["test"][-1]  # nor redis-cli's argv


def test_compose_workers_run_the_code_s_worker_command_and_outwait_a_task(
    services: dict[str, Any],
) -> None:
    fixed = {w.name: w for w in default_workers(load_settings())}
    adaptive = {w.name: w for w in default_workers(load_settings(adaptive={"enabled": True}))}
    assert services["worker-urgent"]["command"] == _celery(worker_argv(fixed["urgent"]))
    assert services["worker-bulk"]["command"] == _celery(worker_argv(adaptive["bulk"]))
    assert services["worker-bulk"]["environment"]["PROJ_ADAPTIVE_CONCURRENCY"] == "true"
    limit_s = load_settings().broker.task_time_limit_s
    for name in ("urgent", "bulk"):
        service = services[f"worker-{name}"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        grace = service["stop_grace_period"]
        assert grace.endswith("s") and float(grace[:-1]) > limit_s
        assert "inspect ping" in service["healthcheck"]["test"][-1]
        assert f"{name}@" in service["healthcheck"]["test"][-1]


def test_compose_flower_has_basic_auth_from_env_and_keeps_its_state(
    services: dict[str, Any],
) -> None:
    flower = services["flower"]
    db = Path(STATE_DIR) / "flower.db"
    assert flower["command"] == [*_celery(flower_argv(5555, db=db))[:-1], "--address=0.0.0.0"]
    assert (
        flower["environment"]["FLOWER_BASIC_AUTH"] == "proj:${FLOWER_PASSWORD:?set FLOWER_PASSWORD}"
    )
    assert not any("auth" in part for part in flower["command"])
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])


def test_compose_api_reads_hashed_keys_and_workers_can_sign_its_callbacks(
    services: dict[str, Any],
) -> None:
    api = services["api"]
    assert api["command"][:2] == ["proj", "api"]
    keys_file = api["environment"]["PROJ_API_KEYS_FILE"]
    assert f"./config/api_keys.toml:{keys_file}:ro" in api["volumes"]
    assert all(p.startswith("127.0.0.1:") for p in api["ports"])
    assert "/readyz" in api["healthcheck"]["test"][-1]
    for name in ("worker-urgent", "worker-bulk"):
        env = services[name]["environment"]
        assert "PROJ_API_CALLBACK_SECRET" in env and "PROJ_API_CALLBACK_ALLOW" in env


def test_compose_environment_is_valid_settings(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("worker-urgent", "worker-bulk", "flower", "metrics"):
        env = {
            k: interpolate(str(v), OPERATOR_ENV) for k, v in services[name]["environment"].items()
        }
        for key in ("REDIS_URL", "PROJ_DATABASE_URL", "PROVIDER_BASE_URL", "PROVIDER_API_KEY"):
            assert env[key], (name, key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        assert settings.broker.redis_url == "redis://:redis-pw-123@redis:6379/0"
        assert settings.database.startswith("postgresql+psycopg://proj:pg-pw-456@postgres")
        assert str(settings.stack.state_dir) == STATE_DIR


def test_compose_prometheus_scrapes_the_services_it_runs(services: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "config" / "prometheus-compose.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["proj"]["static_configs"][0]["targets"] == ["metrics:9808"]
    assert jobs["flower"]["static_configs"][0]["targets"] == ["flower:5555"]
    assert jobs["flower"]["basic_auth"]["password_file"] == "/run/secrets/flower_password"
    assert "flower_password" in services["prometheus"]["secrets"]
    assert "9808" in " ".join(services["metrics"]["command"])


def test_compose_image_runs_as_a_user_that_owns_its_state_volume(
    services: dict[str, Any],
) -> None:
    built = [s for s in services.values() if "build" in s]
    assert len(built) >= 5
    assert {s["build"] for s in built} == {"."}
    assert all(f"proj-state:{STATE_DIR}" in s["volumes"] for s in built)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY config ./config" in dockerfile
    assert 'pip install ".[postgres]"' in dockerfile
    assert re.search(r"^USER proj$", dockerfile, re.M)
    assert f"chown proj:proj {STATE_DIR}" in dockerfile


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed: `docker compose config` not run")
    plugin = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    if plugin.returncode != 0:
        pytest.skip("docker has no compose plugin: `docker compose config` not run")
    out = subprocess.run(
        [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        env={**OPERATOR_ENV, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_worker_argv_has_queue_concurrency_and_name() -> None:
    argv = worker_argv(WorkerSpec("bulk", ("bulk",), 20))
    assert argv[argv.index("-Q") + 1] == "bulk"
    assert argv[argv.index("-c") + 1] == "20"
    assert argv[argv.index("-n") + 1] == "bulk@%h"


def test_adaptive_setting_makes_the_bulk_worker_adaptive() -> None:
    urgent, bulk = default_workers(load_settings(adaptive={"enabled": True, "start": 5}))
    assert "--adaptive" in worker_argv(bulk) and "--adaptive" not in worker_argv(urgent)
    assert bulk.concurrency == 5
