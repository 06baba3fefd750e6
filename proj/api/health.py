"""``/healthz`` (the process answers) and ``/readyz`` (Redis and the broker answer too)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Request

from proj.api.errors import SafeJSONResponse
from proj.app import app as celery_app

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _broker() -> None:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_S)


#: One broker probe at a time, on a thread of its own: probes of a broker that hangs do not
#: pile up in the threads requests use.
_prober = ThreadPoolExecutor(1, thread_name_prefix="proj-api-readyz")
_probe: asyncio.Future[None] | None = None


def _broker_probe() -> asyncio.Future[None]:
    global _probe
    if _probe is None or _probe.done():
        _probe = asyncio.get_running_loop().run_in_executor(_prober, _broker)
    return _probe


@router.get("/readyz", responses={503: {}})
async def readyz(request: Request) -> SafeJSONResponse:
    checks: dict[str, Any] = {}
    for name, probe in (
        ("redis", request.app.state.store.r.ping()),
        ("broker", asyncio.shield(_broker_probe())),
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
    return SafeJSONResponse(body, 200 if ready else 503)
