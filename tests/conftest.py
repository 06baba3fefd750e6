"""Test session set-up.

Integration and e2e tests share one Redis that this session starts on a free port (a
``redis-server`` on PATH, else the embedded extra's binary). ``REDIS_URL`` is set before
proj is imported, so the in-process client and every worker talk to it and nothing else.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from proj.stack.procs import free_port

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="proj-tests-"))
_REDIS_PORT = free_port()
os.environ["REDIS_URL"] = f"redis://127.0.0.1:{_REDIS_PORT}/0"
os.environ["PROJ_STATE_DIR"] = str(_SESSION_DIR / "state")
for _var in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def redis_server(session_dir: Path) -> Iterator[object]:
    """The session's Redis, started on first use."""
    from proj.stack.redis_server import RedisServer

    server = RedisServer(session_dir / "redis", port=_REDIS_PORT).start()
    yield server
    server.stop()
