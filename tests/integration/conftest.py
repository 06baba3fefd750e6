"""Fixtures for tests that need Redis and real Celery workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from proj.sim.admin import SimAdmin
from tests.support import WorkerPool


@pytest.fixture
def redis_client(redis_server: object) -> Iterator[redis_lib.Redis]:
    """A client on the session Redis; the database is emptied before each test."""
    client = redis_lib.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def workers(redis_client: redis_lib.Redis, tmp_path: Path) -> Iterator[WorkerPool]:
    """Start real ``celery worker`` processes; all are stopped after the test."""
    pool = WorkerPool(tmp_path / "logs")
    yield pool
    pool.kill_all()


@pytest.fixture
def celery_app(redis_client: redis_lib.Redis) -> Iterator[object]:
    """proj's app, as clients in the test process use it."""
    from proj import app

    return app


API_KEY = "sk-test-9f8e7d6c5b4a-never-log-me"


@pytest.fixture(scope="session")
def sim_server(session_dir: Path) -> Iterator[str]:
    """The simulated provider in its own process; requires the test API key."""
    import os

    from proj.stack.sim import start_sim

    env = {**os.environ, "SIM_API_KEY": API_KEY}
    proc, url = start_sim(session_dir / "sim.log", env=env, require_key_env="SIM_API_KEY")
    yield url
    proc.stop()


@pytest.fixture
def sim(sim_server: str) -> Iterator[SimAdmin]:
    """Admin client of the simulator, reset (counters and configuration) for this test."""
    admin = SimAdmin(sim_server)
    admin.reset(config=True)
    yield admin
    admin.close()


@pytest.fixture
def provider_env(sim_server: str, tmp_path: Path) -> dict[str, str]:
    """Environment for workers that call the simulator and store results in a fresh SQLite."""
    return {
        "PROVIDER_BASE_URL": sim_server,
        "PROVIDER_API_KEY": API_KEY,
        "PROJ_DATABASE_URL": f"sqlite:///{tmp_path / 'results.sqlite3'}",
    }
