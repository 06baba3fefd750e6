"""Completion callbacks: when a batch submitted with a ``callback_url`` finishes, a worker POSTs
its summary there, signed (:mod:`proj.webhooks`), and tries again with Celery's exponential
backoff while the receiver fails (5xx, 408, 429, no answer), up to PROJ_API_CALLBACK_RETRIES
times (5 s doubling to 10 min apart: about 20 minutes for the default 8). Delivery is at least
once (a worker lost mid-POST sends it again): receivers dedupe on ``Proj-Batch-Id``.

The task carries only the batch id: the URL, the summary and the signing key are read where it
runs (Flower shows task arguments; the key never leaves the settings). The destination is
checked again when it is called, after resolving its host: a name on the allow-list that
points at a loopback, link-local or private address is refused, and the request goes to the
address that was checked (the name is the Host header and the TLS server name), so a second
lookup cannot answer differently. No proxy from the environment, no redirects, and the
answer's body is never read. What happened is kept on the
batch (``callback``: delivered, rejected, refused or failed, with why), which
``GET /v1/batches/{id}`` shows.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
from typing import Any

import httpx
import redis
from celery.utils.time import get_exponential_backoff_interval

from proj.app import app
from proj.batch.progress import with_store
from proj.batch.store import BatchStore, Progress
from proj.settings import get_settings
from proj.webhooks import SIGNATURE_HEADER, Refused, sign

logger = logging.getLogger("proj.callbacks")

#: Statuses a receiver may answer that are worth another try.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
BACKOFF_FIRST_S = 5
BACKOFF_MAX_S = 600


class CallbackFailed(Exception):
    """One attempt failed in a way another may not."""


def _addresses(host: str, port: int) -> list[str]:
    try:
        return sorted(
            {str(a[4][0]) for a in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
        )
    except socket.gaierror:
        return []


async def _read(s: BatchStore, batch_id: str) -> tuple[Progress | None, dict[str, str]]:
    fields = await s.metas(batch_id, "callback_url", "summary", "results_url", "api_key")
    return await s.progress(batch_id), fields


def _countdown(retries: int) -> float:
    """Celery's exponential backoff from 5 s to 10 min, jittered within its upper half (full
    jitter could send the next try at once)."""
    step = get_exponential_backoff_interval(BACKOFF_FIRST_S, retries, BACKOFF_MAX_S, False)
    return float(step * random.uniform(0.5, 1.0))


@app.task(name="proj.callbacks.deliver", bind=True, acks_late=True, ignore_result=True)
def deliver(self: Any, batch_id: str) -> str:
    """POST batch ``batch_id``'s summary to its callback URL; the outcome, in a word."""
    settings = get_settings()
    retries = settings.api.callback_retries
    try:
        progress, fields = with_store(lambda s: _read(s, batch_id), settings)
    except (redis.RedisError, OSError) as exc:  # the batch is still there: try again later
        raise self.retry(
            countdown=_countdown(self.request.retries + 1), max_retries=retries
        ) from exc
    url = fields.get("callback_url")
    if progress is None or not url:
        return "gone"  # expired, or submitted without a callback
    secret = settings.api.callback_secret
    try:
        if secret is None:
            raise Refused("PROJ_API_CALLBACK_SECRET is not set: callbacks are signed with it")
        allow = settings.api.allow_list
        host = allow.check_url(url)
        target = httpx.URL(url)
        addresses = _addresses(host, target.port or (443 if target.scheme == "https" else 80))
        allow.check_addresses(host, addresses)
    except Refused as err:
        return _settle(batch_id, "refused", str(err))
    body = json.dumps(
        {
            "event": "batch.finished",
            "batch": progress.to_dict(),
            "summary": json.loads(fields["summary"]) if "summary" in fields else None,
            "results_url": fields.get("results_url"),
            "api_key": fields.get("api_key"),
        },
        default=str,
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "proj-callback/1",
        "Host": target.netloc.decode("ascii"),
        "Proj-Batch-Id": batch_id,
        SIGNATURE_HEADER: sign(secret.get_secret_value(), body),
    }
    pinned = target.copy_with(host=addresses[0])  # the address just checked, not a new lookup
    try:
        with httpx.Client(
            timeout=settings.api.callback_timeout_s, follow_redirects=False, trust_env=False
        ) as client:
            request = client.build_request(
                "POST", pinned, content=body, headers=headers, extensions={"sni_hostname": host}
            )
            answer = client.send(request, stream=True)  # the status is all we read
            answer.close()
        if answer.status_code in RETRY_STATUSES:
            raise CallbackFailed(f"HTTP {answer.status_code}")
    except (httpx.HTTPError, CallbackFailed) as err:
        why = str(err) or type(err).__name__
        if self.request.retries >= retries:
            return _settle(batch_id, "failed", f"{why} after {self.request.retries + 1} attempts")
        raise self.retry(
            countdown=_countdown(self.request.retries + 1), max_retries=retries
        ) from None
    if answer.is_success:
        return _settle(batch_id, "delivered", f"HTTP {answer.status_code}")
    return _settle(batch_id, "rejected", f"HTTP {answer.status_code}")  # 3xx, 4xx: final


def _settle(batch_id: str, outcome: str, detail: str) -> str:
    log = logger.info if outcome == "delivered" else logger.warning
    log("batch %s: callback %s (%s)", batch_id, outcome, detail)
    record = json.dumps({"status": outcome, "detail": detail, "at": time.time()})

    async def keep(s: BatchStore) -> None:
        await s.set_meta(batch_id, callback=record)

    with_store(keep, get_settings())
    return outcome
