"""The chaos suite: real faults on real processes (SIGKILL, Redis restarts, provider outages,
poison messages, concurrent replays).

Each test reports what it submitted, what completed, what was lost and what ran twice with
the ``chaos_report`` fixture; the lines are printed at the end of the run. Tests marked
``chaos_long`` run only under ``make chaos`` (``PROJ_CHAOS_LONG=1``); the rest run in
``make test`` too.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.integration.conftest import (  # noqa: F401  (fixtures shared with integration)
    celery_app,
    provider_env,
    redis_client,
    sim,
    sim_server,
    workers,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PROJ_CHAOS_LONG") == "1":
        return
    skip = pytest.mark.skip(reason="a long chaos run: `make chaos` runs it")
    for item in items:
        if "chaos_long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def chaos_report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``chaos_report(submitted=.., completed=.., lost=.., twice=.., **more)`` records one line."""

    def report(**counts: object) -> None:
        fields = " ".join(f"{k}={v}" for k, v in counts.items())
        # A property of the test's report, so it reaches the run's summary (tests/conftest.py)
        # from any process, pytest-xdist's workers included.
        request.node.user_properties.append(("chaos", f"{request.node.name}: {fields}"))

    return report
