"""Test session set-up.

Integration and e2e tests share one Redis that this session starts on a free port (a
``redis-server`` on PATH, else the embedded extra's binary). ``REDIS_URL`` is set before
proj is imported, so the in-process client and every worker talk to it and nothing else.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Nothing from proj is imported above this point: the environment is the session's before
# any settings can be read.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="proj-tests-"))
_REDIS_PORT = _free_port()
_REDIS_URL = f"redis://127.0.0.1:{_REDIS_PORT}/0"
os.environ["REDIS_URL"] = _REDIS_URL
os.environ["PROJ_STATE_DIR"] = str(_SESSION_DIR / "state")
for _var in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
    os.environ.pop(_var, None)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to run if this process would talk to any Redis but the session's own."""
    from proj.app import app
    from proj.settings import get_settings

    urls = {get_settings().broker.redis_url, app.conf.broker_url, app.conf.result_backend}
    if urls != {_REDIS_URL}:
        pytest.exit(f"tests must use the session's Redis {_REDIS_URL}, settings say {urls}", 3)


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


_CHAOS_LINES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep the lines chaos tests report (``chaos_report``), from whichever process ran them."""
    if report.when == "teardown":
        _CHAOS_LINES.extend(str(v) for k, v in report.user_properties if k == "chaos")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _CHAOS_LINES:
        terminalreporter.section("chaos: submitted / completed / lost / run twice")
        for line in _CHAOS_LINES:
            terminalreporter.write_line(line)
