"""``/v1/tasks``: enqueue a task its author exposed (``@app.task(expose=True)``), follow it.

No other task is reachable: an unknown or unexposed name is answered 404 alike. Arguments are
checked against the task's signature first (:mod:`proj.api.arguments`). A task id is known
here only if it was enqueued here, and only to the key that enqueued it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from celery.result import AsyncResult
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from proj import keys
from proj.api import arguments
from proj.api.auth import TaskReader, TaskWriter, check_owner
from proj.api.errors import ApiError, SafeJSONResponse
from proj.api.links import link
from proj.app import app as celery_app
from proj.errors import QueueFull

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


class TaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    countdown: float | None = Field(None, ge=0, le=86400, description="Start no sooner.")


def exposed() -> dict[str, Any]:
    """The tasks callers may enqueue, by name."""
    return {n: t for n, t in celery_app.tasks.items() if getattr(t, "expose", False)}


@router.post("/{name}", status_code=202, responses={401: {}, 403: {}, 404: {}, 422: {}, 429: {}})
async def enqueue(
    name: str, body: TaskRequest, request: Request, key: TaskWriter
) -> SafeJSONResponse:
    """Check the arguments against the task's signature, then enqueue it; 202 with its id."""
    task = exposed().get(name)
    if task is None:
        raise ApiError(404, f"no exposed task is called {name!r}")
    problem = arguments.check(task.run, body.args, body.kwargs)
    if problem is not None:
        raise ApiError(422, f"{name}: {problem}; nothing was queued")
    # The record first: a task that is queued is always one GET /v1/tasks/{id} knows.
    task_id = str(uuid.uuid4())
    r = request.app.state.store.r
    ttl = request.app.state.settings.api.task_ttl_s
    await r.set(keys.api_task(task_id), json.dumps({"task": name, "key": key.name}), ex=ttl)
    try:
        await asyncio.to_thread(
            task.apply_async, body.args, body.kwargs, countdown=body.countdown, task_id=task_id
        )
    except Exception as exc:
        await r.delete(keys.api_task(task_id))
        if isinstance(exc, QueueFull):
            raise ApiError(503, str(exc), headers={"Retry-After": "5"}) from None
        raise
    url = link(request, "get_task", task_id=task_id)
    answer = {"task_id": task_id, "status_url": url}
    return SafeJSONResponse(answer, 202, headers={"Location": url})


def _outcome(task_id: str) -> dict[str, Any]:
    res = AsyncResult(task_id, app=celery_app)
    out: dict[str, Any] = {"state": res.state}
    if res.state == "SUCCESS":
        out["result"] = res.result
    elif res.state == "FAILURE":
        exc = res.result
        out["error"] = {"type": type(exc).__name__, "message": str(exc)}
    return out


@router.get("/{task_id}", name="get_task", responses={401: {}, 403: {}, 404: {}})
async def get_task(task_id: str, request: Request, key: TaskReader) -> dict[str, Any]:
    """The task's state (PENDING, STARTED, RETRY, SUCCESS, FAILURE) and its result or error."""
    raw = await request.app.state.store.r.get(keys.api_task(task_id))
    if raw is None:
        raise ApiError(404, f"task {task_id!r} not found (not enqueued here, or expired)")
    record = json.loads(raw)
    check_owner(key, record["key"], f"task {task_id!r}")
    return {
        "task_id": task_id,
        "task": record["task"],
        **await asyncio.to_thread(_outcome, task_id),
    }
