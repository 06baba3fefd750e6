"""Tasks as a team that adopts proj writes them: their own code, their own API (here the
simulator's ``source`` route stands in for it, at ``USER_API_URL``), proj's options.

Workers load this module with ``-I tests.usertasks``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

import proj
from proj import app


def _url(path: str) -> str:
    return os.environ["USER_API_URL"].rstrip("/") + path


_client: tuple[int, httpx.Client] | None = None


def _http() -> httpx.Client:
    """One client per process, made after the fork (as a user's module would keep one)."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), httpx.Client(timeout=5))
    return _client[1]


@app.task(
    name="usertasks.charge",
    breaker="payments",
    autoretry_for=(httpx.HTTPError,),
    max_retries=200,
    default_retry_delay=0.2,
    retry_backoff=False,
    retry_jitter=False,
)
def charge(i: int) -> int:
    """Calls the user's payments service with their own httpx; proj's breaker guards it."""
    _http().get(_url(f"/v1/sources/pay{i}")).raise_for_status()
    return i


@app.task(name="usertasks.sync_contacts", global_rate_limit="10/s", rate_limit_key="crm")
def sync_contacts(i: int) -> float:
    """At most 10 starts a second across every worker: the CRM's budget. Returns when it
    started (after the limit let it in)."""
    started = time.time()
    _http().get(_url(f"/v1/sources/crm{i}")).raise_for_status()
    return started


@app.task(name="usertasks.lookup")
def lookup(i: int) -> int:
    """Calls a declared dependency (``userapi``) through ``proj.http``: breaker, limits, 429s
    and the adaptive controller's signal come with the client."""
    with proj.http("userapi") as client:
        client.get(f"/v1/sources/item{i}").raise_for_status()
    return i


@app.task(name="usertasks.fetch")
def fetch(i: int) -> int:
    """The user's own client and nothing of proj's: the adaptive controller hears the task's
    outcome (a 429 raised by ``raise_for_status`` is overload; the task is deferred)."""
    _http().get(_url(f"/v1/sources/f{i}")).raise_for_status()
    return i


@app.task(name="usertasks.tally", bind=True)
def tally(self: Any, i: int, log_path: str, duration_s: float) -> int:
    """Sleeps ``duration_s`` between a ``start`` and an ``end`` line appended to ``log_path``
    (with ``i`` and the worker's node name): a count of runs kept outside Redis, so it
    survives the broker restarts of the chaos suite."""
    _append(log_path, f"start {i} {self.request.hostname}\n")
    time.sleep(duration_s)
    _append(log_path, f"end {i} {self.request.hostname}\n")
    return i


def _append(path: str, line: str) -> None:
    """One ``write`` in append mode: lines from concurrent processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.task(name="usertasks.add", expose=True)
def add(x: int, y: int = 0) -> int:
    """Exposed to ``proj api`` callers (``POST /v1/tasks/usertasks.add``)."""
    return x + y
