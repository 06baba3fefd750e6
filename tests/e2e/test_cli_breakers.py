"""``proj breakers``: list, force open, close, against a real Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis as redis_lib

from proj import keys
from tests.e2e.conftest import clean_env


def _proj(*args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "proj")
    return subprocess.run(
        [exe, *args],
        env=clean_env(REDIS_URL=redis_url, COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_breakers_list_open_close(redis_server: object) -> None:
    url = redis_server.url  # type: ignore[attr-defined]
    r = redis_lib.Redis.from_url(url)
    r.delete(keys.breaker("ai"), keys.breaker("payments"), keys.BREAKER_REGISTRY)
    out = _proj("breakers", redis_url=url)
    assert out.returncode == 0, out.stderr
    assert "ai" in out.stdout and "closed" in out.stdout

    # An unknown name is an error that names the known ones, and creates nothing.
    out = _proj("breakers", "open", "payments", redis_url=url)
    assert out.returncode == 2
    assert "no breaker named 'payments'; known: ai, company, person" in out.stdout
    assert not r.exists(keys.breaker("payments"))

    # A user's breaker, made in another process, is listed with its own rule.
    made = subprocess.run(
        [sys.executable, "-c", "import proj; proj.breaker('payments', fail_max=3).flush()"],
        env=clean_env(REDIS_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    listing = _proj("breakers", redis_url=url).stdout
    assert "payments" in listing and "3 failures in a row" in listing

    out = _proj("breakers", "open", "payments", redis_url=url)
    assert out.returncode == 0 and "closed -> forced-open" in out.stdout
    assert r.hget(keys.breaker("payments"), "state") == b"forced-open"
    listing = _proj("breakers", redis_url=url).stdout
    assert "payments" in listing and "forced-open" in listing

    out = _proj("breakers", "close", "payments", redis_url=url)
    assert "forced-open -> closed" in out.stdout
    assert r.hget(keys.breaker("payments"), "state") == b"closed"


def test_cli_reports_unreachable_redis() -> None:
    out = _proj("breakers", redis_url="redis://127.0.0.1:1/0")
    assert out.returncode == 1
    assert "cannot reach Redis" in out.stdout
