"""``/healthz`` (the process answers) and ``/readyz`` (Redis and the broker answer too)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from proj.app import app as celery_app

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _broker() -> None:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_S)


@router.get("/readyz", responses={503: {}})
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, Any] = {}
    for name, probe in (
        ("redis", request.app.state.store.r.ping()),
        ("broker", asyncio.to_thread(_broker)),
    ):
        try:
            await asyncio.wait_for(probe, CHECK_TIMEOUT_S + 1)
            checks[name] = "ok"
        except Exception as err:  # any failure is "not ready", said in one line
            checks[name] = f"unreachable: {type(err).__name__}: {err}"[:200]
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not ready", **checks}
    if not ready:
        body["error"] = "; ".join(f"{k} {v}" for k, v in checks.items() if v != "ok")
    return JSONResponse(body, 200 if ready else 503)
