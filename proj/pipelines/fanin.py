"""Branch records and the fan-in: every branch is reported by name, successes and failures
apart, whatever order the branches finished in.

A branch never raises into the fan-in: it returns a record, so one failed branch cannot sink
the rest (a Celery chord would drop its body if a header task raised).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from proj.provider.errors import ProviderError, RateLimited
from proj.resilience.deferral import Deferral


def _wait_s(exc: BaseException) -> float:
    if isinstance(exc, RateLimited):
        return exc.retry_after_s or 1.0
    return float(getattr(exc, "wait_s", 1.0))


def error_record(exc: BaseException, *, timeout_s: float | None = None) -> dict[str, Any]:
    """A JSON-safe description of why a branch failed; ``kind`` is a stable label."""
    if isinstance(exc, ProviderError):
        return exc.record()
    if isinstance(exc, (TimeoutError, SoftTimeLimitExceeded)):
        limit = f" after {timeout_s}s" if timeout_s else ""
        return {"kind": "timeout", "message": f"branch timed out{limit}", "status": None}
    return {"kind": "internal", "message": f"{type(exc).__name__}: {exc}", "status": None}


def ok(
    name: str, value: Any, seconds: float, usage: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "ok": True,
        "value": value,
        "seconds": seconds,
        "usage": dict(usage) if usage else None,
    }


def failed(name: str, error: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    return {"name": name, "ok": False, "error": dict(error), "seconds": seconds, "usage": None}


def fan_in(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"results": {name: value}, "errors": {name: error}, "seconds": {...}, "usage": [...]}``."""
    out: dict[str, Any] = {"results": {}, "errors": {}, "seconds": {}, "usage": []}
    for r in records:
        name = r["name"]
        out["seconds"][name] = r.get("seconds", 0.0)
        if r.get("ok"):
            out["results"][name] = r.get("value")
        else:
            out["errors"][name] = r.get("error") or {"kind": "internal", "message": "no record"}
        if r.get("usage"):
            out["usage"].append(r["usage"])
    return out


async def run_branch(name: str, call: Awaitable[Any], timeout_s: float) -> dict[str, Any]:
    """Await one branch with a deadline; its value or its error as a record."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            value = await call
    except (asyncio.CancelledError, Deferral, RateLimited):
        raise  # a wait (open breaker, rate limit, 429) defers the task; not a failure
    except Exception as exc:
        return failed(name, error_record(exc, timeout_s=timeout_s), time.monotonic() - started)
    usage = value.pop("usage", None) if isinstance(value, dict) else None
    return ok(name, value, time.monotonic() - started, usage)


async def gather_branches(
    branches: Mapping[str, Awaitable[Any]], timeout_s: float
) -> dict[str, Any]:
    """Run named branches concurrently and fan them in."""
    records = await asyncio.gather(*(run_branch(n, c, timeout_s) for n, c in branches.items()))
    return fan_in(records)
