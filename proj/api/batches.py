"""``/v1/batches``: submit a batch, follow it (state, server-sent events), read its results.

A submission is all or nothing unless it asks otherwise: every item is validated first and one
invalid item answers 422 naming each bad item's index, field and value, with nothing queued
(``"partial": true`` queues the valid ones and lists the rest). An ``Idempotency-Key`` makes the
batch id a function of the key and the caller, so a retried request finds the batch the first
one made (the store creates a batch id once, atomically) and gets the same answer; the same key
with a different request is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse

from proj.api.auth import BatchReader, BatchWriter, check_owner
from proj.api.errors import ApiError, SafeJSONResponse
from proj.api.keys import ApiKey
from proj.api.links import link
from proj.batch.store import BatchStore, Progress
from proj.batch.submit import NotStarted, asubmit, finalize_wait_s, prepare, rewatch
from proj.errors import QueueFull
from proj.pipelines import registry
from proj.settings import Settings
from proj.webhooks import Refused

router = APIRouter(prefix="/v1/batches", tags=["batches"])

#: How often a progress stream looks at the batch.
EVENTS_INTERVAL_S = 0.5
RESULTS_CHUNK = 500
#: A request with more items hashes and validates them on a thread, not on the event loop.
INLINE_ITEMS = 200


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field(description="A pipeline's name (leads, documents, ...).")
    items: list[Any] = Field(description="The items, as the pipeline takes them.")
    callback_url: str | None = Field(
        None,
        max_length=2048,
        description="POSTed the batch's summary when it finishes, signed (Proj-Signature).",
    )
    urgent: bool = Field(False, description="Run on the urgent queue.")
    partial: bool = Field(False, description="Queue the valid items, list the invalid ones.")
    fresh: bool = Field(False, description="Compute every item again, even one cached.")


class BatchAccepted(BaseModel):
    batch_id: str
    status_url: str
    results_url: str
    events_url: str
    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]] = []


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _store(request: Request) -> BatchStore:
    store: BatchStore = request.app.state.store
    return store


def _batch_id(key: ApiKey, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return uuid.uuid4().hex[:16]
    return hashlib.sha256(f"{key.name}\n{idempotency_key}".encode()).hexdigest()[:16]


def _links(request: Request, batch_id: str) -> dict[str, str]:
    return {
        "status_url": link(request, "get_batch", batch_id=batch_id),
        "results_url": link(request, "batch_results", batch_id=batch_id),
        "events_url": link(request, "batch_events", batch_id=batch_id),
    }


def _check_request(body: BatchRequest, settings: Settings) -> None:
    limit = settings.api.max_items
    if len(body.items) > limit:
        raise ApiError(
            413, f"items: {len(body.items)} items; at most {limit} per batch (PROJ_API_MAX_ITEMS)"
        )
    if not body.items:
        raise ApiError(422, "items: the batch has no items")
    known = registry.pipelines()
    if body.pipeline not in known:
        raise ApiError(
            422, f"pipeline: {body.pipeline!r} is not a pipeline; known: {', '.join(sorted(known))}"
        )
    if body.callback_url is not None:
        if settings.api.callback_secret is None:
            raise ApiError(
                422, "callback_url: this server signs no callbacks (PROJ_API_CALLBACK_SECRET unset)"
            )
        try:
            settings.api.allow_list.check_url(body.callback_url)
        except Refused as err:
            raise ApiError(422, f"callback_url: {err}") from None


async def _replay(
    store: BatchStore, batch_id: str, fingerprint: str, key: str, settings: Settings
) -> SafeJSONResponse:
    """The answer to a retried request: the first one's answer, for the batch it made."""
    first = await store.metas(batch_id, "request", "answer")
    if first.get("request") != fingerprint:
        raise ApiError(
            422, f"Idempotency-Key {key!r} was used for a different request; use a new key"
        )
    await rewatch(store, batch_id, settings)
    answer = json.loads(first.get("answer") or "{}")
    headers = {"Location": answer.get("status_url", ""), "Idempotent-Replayed": "true"}
    return SafeJSONResponse(answer, 202, headers=headers)


def _fingerprint(body: BatchRequest) -> str:
    return hashlib.sha256(
        json.dumps(body.model_dump(), sort_keys=True, default=str).encode()
    ).hexdigest()


@router.post(
    "",
    status_code=202,
    response_model=BatchAccepted,
    responses={401: {}, 403: {}, 413: {}, 422: {}, 429: {}, 503: {}},
)
async def submit_batch(
    body: BatchRequest,
    request: Request,
    key: BatchWriter,
    idempotency_key: str | None = Header(None, min_length=1, max_length=255),
) -> SafeJSONResponse:
    """Validate every item, store the batch and start it; 202 with its id and URLs."""
    settings, store = _settings(request), _store(request)
    _check_request(body, settings)
    batch_id = _batch_id(key, idempotency_key)
    big = len(body.items) > INLINE_ITEMS
    fingerprint = await asyncio.to_thread(_fingerprint, body) if big else _fingerprint(body)
    if idempotency_key is not None and await store.meta(batch_id, "request") is not None:
        return await _replay(store, batch_id, fingerprint, idempotency_key, settings)
    if big:
        prepared = await asyncio.to_thread(prepare, body.pipeline, body.items, batch_id=batch_id)
    else:
        prepared = prepare(body.pipeline, body.items, batch_id=batch_id)
    rejected = [r.to_dict() for r in prepared.handle.rejected]
    if rejected and not body.partial:
        more = f" (and {len(rejected) - 1} more invalid items)" if len(rejected) > 1 else ""
        raise ApiError(422, f"{rejected[0]['message']}{more}; nothing was queued", errors=rejected)
    if not prepared.items:
        raise ApiError(422, "items: no valid items; nothing was queued", errors=rejected)
    links = _links(request, batch_id)
    answer = {
        "batch_id": batch_id,
        **links,
        "accepted": prepared.handle.accepted,
        "duplicates": prepared.handle.duplicates,
        "rejected": rejected,
    }
    meta = {
        "request": fingerprint,
        "answer": json.dumps(answer, default=repr),
        "api_key": key.name,
        "results_url": links["results_url"],
    }
    if body.callback_url is not None:
        meta["callback_url"] = body.callback_url
    try:
        handle = await asubmit(
            store, prepared, urgent=body.urgent, fresh=body.fresh, meta=meta, settings=settings
        )
    except QueueFull as err:  # nothing was stored
        raise ApiError(503, str(err), headers={"Retry-After": "5"}) from None
    except NotStarted as err:
        again = (
            "send it again with the same Idempotency-Key" if idempotency_key else "send it again"
        )
        raise ApiError(503, f"{err}; {again}", headers={"Retry-After": "5"}) from None
    if handle.existing:  # the same key raced us
        return await _replay(store, batch_id, fingerprint, idempotency_key or "", settings)
    return SafeJSONResponse(answer, 202, headers={"Location": links["status_url"]})


async def _owned(request: Request, key: ApiKey, batch_id: str) -> Progress:
    store = _store(request)
    p = await store.progress(batch_id)
    if p is None:
        raise ApiError(404, f"batch {batch_id!r} not found (expired, or never submitted)")
    check_owner(key, await store.meta(batch_id, "api_key"), f"batch {batch_id!r}")
    return p


async def _state(store: BatchStore, p: Progress) -> dict[str, Any]:
    out: dict[str, Any] = p.to_dict()
    settled = p.done + p.failed
    out["fraction_done"] = round(settled / p.total, 4) if p.total else 1.0
    kept = await store.metas(p.batch_id, "summary", "callback")
    for field in ("summary", "callback"):
        out[field] = json.loads(kept[field]) if field in kept else None
    return out


@router.get("/{batch_id}", name="get_batch", responses={401: {}, 403: {}, 404: {}})
async def get_batch(batch_id: str, request: Request, key: BatchReader) -> dict[str, Any]:
    """Progress, counts and, once finished, the summary and how the callback went."""
    p = await _owned(request, key, batch_id)
    return await _state(_store(request), p)


@router.get(
    "/{batch_id}/results",
    name="batch_results",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}, 404: {}},
)
async def batch_results(
    batch_id: str,
    request: Request,
    key: BatchReader,
    cursor: int = Query(
        0, ge=0, description="Resume after a line: its `cursor` (0: from the start)."
    ),
    limit: int | None = Query(None, ge=1, description="Send at most this many."),
) -> StreamingResponse:
    """Settled items, one JSON object per line, up to the first item not settled yet: each
    with its ``index`` in the request (and ``repeats``, the other places it had there) and the
    ``cursor`` to resume after it."""
    p = await _owned(request, key, batch_id)
    store, finished = _store(request), p.status == "finished"
    end = p.total if limit is None else min(p.total, cursor + limit)

    async def lines() -> AsyncIterator[bytes]:
        at = cursor
        while at < end:
            chunk = await store.settled(
                batch_id, at, min(RESULTS_CHUNK, end - at), finished=finished
            )
            for index, places, state, value in chunk:
                line: dict[str, Any] = {"index": places[0], "cursor": index + 1, "status": state}
                line["result" if state == "done" else "error"] = value
                if len(places) > 1:  # the same item more than once in the request
                    line["repeats"] = places[1:]
                yield (json.dumps(line) + "\n").encode()
            if len(chunk) < min(RESULTS_CHUNK, end - at):
                return
            at += len(chunk)

    return StreamingResponse(
        lines(), media_type="application/x-ndjson", headers={"Proj-Batch-Status": p.status}
    )


@router.get("/{batch_id}/events", name="batch_events", responses={404: {}})
async def batch_events(batch_id: str, request: Request, key: BatchReader) -> EventSourceResponse:
    """Progress as server-sent events: ``progress`` when the counts move, then one
    ``finished`` (with the summary) and the stream ends."""
    await _owned(request, key, batch_id)
    store = _store(request)
    last_step_wait = finalize_wait_s(_settings(request))

    async def events() -> AsyncIterator[dict[str, Any]]:
        last: tuple[int, ...] | None = None
        while not await request.is_disconnected():
            p = await store.progress(batch_id)
            if p is None:
                yield {"event": "gone", "data": json.dumps({"batch_id": batch_id})}
                return
            done = p.status == "finished" and (
                p.finalized is not None or time.time() - (p.finished or 0) > last_step_wait
            )
            if done:
                state = await _state(store, p)
                yield {"event": "finished", "id": str(p.total), "data": json.dumps(state)}
                return
            now = (p.done, p.failed, p.cached, p.in_flight, p.deferred)
            if now != last:
                last = now
                yield {
                    "event": "progress",
                    "id": str(p.done + p.failed),
                    "data": json.dumps(p.to_dict()),
                }
            await asyncio.sleep(EVENTS_INTERVAL_S)

    return EventSourceResponse(events(), ping=15)
