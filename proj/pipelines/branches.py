"""Run one branch of a Celery fan-out as a task that never raises into its chord."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from proj.pipelines.fanin import error_record, failed, run_branch
from proj.provider import runtime
from proj.provider.errors import RateLimited
from proj.resilience.deferral import Deferral


def run_as_branch(
    name: str, step: Callable[[runtime.Providers], Awaitable[Any]], timeout: float
) -> dict[str, Any]:
    """``step`` on this process's loop within ``timeout`` seconds (the branch deadline, which
    the task reads from its settings); always a branch record.

    Timeouts, provider errors and bugs become error records, so the chord's body runs with
    every branch accounted for. An open breaker is not an error: it defers the task.
    """
    started = time.monotonic()
    try:
        return runtime.run(lambda p: run_branch(name, step(p), timeout), timeout_s=timeout + 5)
    except (Deferral, RateLimited):
        raise  # the task base class defers the task; not a failure of this branch
    except (SoftTimeLimitExceeded, TimeoutError) as exc:
        return failed(name, error_record(exc, timeout_s=timeout), time.monotonic() - started)
    except Exception as exc:
        return failed(name, error_record(exc), time.monotonic() - started)
