"""The ``proj api`` application (FastAPI): its routes, keys, limits and Redis connection.

    proj api                     # 127.0.0.1:8800 (PROJ_API_HOST, PROJ_API_PORT)
    GET /openapi.json            # the schema of every route

One process serves many clients on one event loop; each request uses the loop's Redis pool
(:mod:`proj.guard.connections`) and Celery's producer pool in a thread to enqueue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from celery._state import _set_task_join_will_block
from fastapi import FastAPI

from proj.api import batches, errors, health, tasks
from proj.api.auth import KeyGate
from proj.api.bodylimit import BodyLimit
from proj.api.errors import SafeJSONResponse
from proj.api.keys import KeyRing
from proj.batch.store import BatchStore
from proj.guard import connections
from proj.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        # This process sends tasks and never waits on a result by subscription (it reads
        # results from the backend): tell Celery so, as its workers do, or its Redis backend
        # subscribes to every task sent here and keeps the subscriptions (celery 5.7).
        _set_task_join_will_block(True)
        connections.adopt_loop()  # the limiter and the store share the loop's pool
        api.state.store = BatchStore(connections.async_client(), settings.batch.ttl_s)
        try:
            yield
        finally:
            await connections.aclose_loop_client()

    api = FastAPI(
        title="proj",
        version=version("proj"),
        summary="Submit batches and tasks, follow them, get called back.",
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    api.state.settings = settings
    api.state.keys = KeyRing.load(settings.api.keys_path)
    # The last added runs first: a declared Content-Length over the cap is refused (nothing
    # read), then a request without a known key (before its body is read), and the body is
    # counted as the route reads it.
    api.add_middleware(KeyGate)
    api.add_middleware(BodyLimit, max_bytes=settings.api.max_body_bytes)
    errors.install(api)
    for module in (health, batches, tasks):
        api.include_router(module.router)
    return api
