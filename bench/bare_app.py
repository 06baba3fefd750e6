"""Bare Celery for comparison: one queue, Celery's defaults (JSON only), the same work task."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, signals

app = Celery("bare", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
app.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")


@signals.before_task_publish.connect(weak=False)
def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers.setdefault("proj_sent_at", time.time())


@app.task(name="bare.work", bind=True)
def work(self: Any, duration_s: float = 0.0) -> dict[str, Any]:
    started = time.time()
    sent = self.request.get("proj_sent_at")
    if duration_s:
        time.sleep(duration_s)
    return {"queue_wait_s": None if sent is None else started - float(sent), "started_at": started}


@app.task(name="bare.company", rate_limit=os.environ.get("BARE_RATE_LIMIT", "50/s"))
def company(domain: str) -> dict[str, Any]:
    """One company lookup with Celery's own (per worker) rate limit."""
    import httpx

    r = httpx.get(f"{os.environ['PROVIDER_BASE_URL']}/v1/companies/{domain}", timeout=30)
    r.raise_for_status()
    return dict(r.json())
