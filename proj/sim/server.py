"""The simulated provider's HTTP server (aiohttp), with an admin API and request counters.

Endpoints:
  POST /v1/chat/completions         OpenAI-compatible chat completion (route ``chat``); with
                                    ``"stream": true`` OpenAI's server-sent events (chunks, an
                                    optional usage chunk, ``data: [DONE]``). A body that is not
                                    a JSON object, or lacks ``model`` or ``messages``, gets a 400
                                    in OpenAI's error format, counted as ``bad_request``.
  GET  /v1/models, GET /v1/models/{id}   the simulated models in OpenAI's format (no route:
                                    always answers, but takes the key like the routes below)
  GET  /v1/companies/{domain}       company lookup (route ``company``)
  GET  /v1/people/{email}           person lookup (route ``person``)
  GET  /v1/sources/{name}           one source for multi-source aggregation (route ``source``)
  GET  /admin/config, POST /admin/config (partial update), POST /admin/reset, GET /admin/stats,
  GET  /admin/arrivals?route=R (wall-clock times of the last 200,000 requests); every admin
                                    call takes the admin key in ``X-Admin-Key`` (401 without)
  GET  /healthz

Any route takes ``?delay_ms=N`` to pin the latency of that one request (for ordering tests).
A streamed answer sends its first chunk after 80% of the latency and spreads the rest over
the content chunks; the request stays in flight until its last chunk (or the caller hangs up).
"""

from __future__ import annotations

import asyncio
import email.utils
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
from aiohttp import web

from proj.sim import fake
from proj.sim.chat import BadRequest, chat_answer, chat_body, chat_key, chat_stream, json_body
from proj.sim.config import ADMIN_KEY_HEADER, ROUTES, SimConfig
from proj.sim.state import SimState


def _retry_after_header(seconds: float, fmt: str) -> str:
    if fmt == "http-date":
        return email.utils.formatdate(time.time() + seconds, usegmt=True)
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:.3f}"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "simulated", "code": status}}
    return web.json_response(body, status=status, headers=headers)


def _authorized(state: SimState, request: web.Request) -> bool:
    if state.api_key is None:
        return True
    return request.headers.get("Authorization") == f"Bearer {state.api_key}"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Parse = Callable[[web.Request], Awaitable[Any]]
Streamer = Callable[[web.Request, Any, float], Awaitable[web.StreamResponse]]


def _admin(state: SimState, handler: Handler) -> Handler:
    """``handler`` for callers with the admin key only: the admin API reconfigures the
    provider and reads its traffic."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        given = request.headers.get(ADMIN_KEY_HEADER, "").encode()
        if not hmac.compare_digest(given, state.admin_key.encode()):
            return _error(401, f"the admin API takes the admin key in {ADMIN_KEY_HEADER}")
        return await handler(request)

    return guarded


def _route(
    state: SimState,
    route: str,
    key_of: Callable[[web.Request, Any], str],
    answer: Callable[[web.Request, Any], Any],
    *,
    parse: Parse = json_body,
    streamer: Streamer | None = None,
) -> Handler:
    """A simulated route. ``parse`` reads the body (raising :class:`BadRequest`); with a
    ``streamer``, a body with ``"stream": true`` gets a good answer as an event stream."""

    async def handler(request: web.Request) -> web.StreamResponse:
        # Sources are public URLs: only the provider's own routes take the key.
        if route != "source" and not _authorized(state, request):
            state.unauthorized += 1
            return _error(401, "invalid api key")
        try:
            body = await parse(request)
        except BadRequest as err:
            state.bad_request[route] += 1
            return err.response()
        decision = state.admit(route, key_of(request, body))
        cfg = state.config.route(route)
        if decision.outcome == "rate_limited":
            retry = _retry_after_header(decision.retry_after_s or 0.0, cfg.retry_after_format)
            return _error(429, "rate limited", {"Retry-After": retry})
        if decision.outcome == "outage":
            return _error(decision.status, "service unavailable (simulated outage)")
        state.in_flight[route] += 1
        state.max_in_flight[route] = max(state.max_in_flight[route], state.in_flight[route])
        delay = decision.delay_s
        if "delay_ms" in request.query and decision.outcome in ("ok", "error", "malformed"):
            delay = float(request.query["delay_ms"]) / 1000.0  # a test pins this request's latency
        streaming = streamer is not None and isinstance(body, dict) and body.get("stream") is True
        try:
            # A stream is in flight until its last chunk; a hang-up cancels this handler.
            if streamer is not None and streaming and decision.outcome in ("ok", "timeout"):
                return await streamer(request, body, delay)
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            state.in_flight[route] -= 1
        if decision.outcome == "error":
            return _error(decision.status, "simulated server error")
        if decision.outcome == "malformed":
            if streaming:
                return web.Response(
                    text="data: <html>502 upstream garbage\n\n", content_type="text/event-stream"
                )
            return web.Response(text="<html>502 upstream garbage", content_type="application/json")
        return web.json_response(answer(request, body))

    return handler


def _lookup_route(
    state: SimState, route: str, param: str, answer: Callable[[str], dict[str, Any]]
) -> Handler:
    """A lookup route: the path parameter ``param`` is the key, ``answer`` makes the reply."""
    return _route(
        state,
        route,
        lambda r, _: r.match_info[param],
        lambda r, _: answer(r.match_info[param]),
    )


def make_app(state: SimState) -> web.Application:
    app = web.Application()
    app["state"] = state

    async def get_config(_: web.Request) -> web.Response:
        return web.json_response(state.config.model_dump())

    async def post_config(request: web.Request) -> web.Response:
        patch = await request.json()
        try:
            if request.query.get("replace"):
                config = SimConfig.model_validate(patch)
            else:
                config = state.config.merged(patch)
        except (pydantic.ValidationError, TypeError, AttributeError) as err:
            return _error(400, f"invalid config: {err}")
        state.apply(config)
        return web.json_response(config.model_dump())

    async def reset(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        if body.get("config"):
            state.apply(SimConfig())
        state.reset_counters()
        return web.json_response({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state.stats(timeline=bool(request.query.get("timeline"))))

    async def arrivals(request: web.Request) -> web.Response:
        route = request.query.get("route", "chat")
        if route not in ROUTES:
            return _error(400, f"unknown route {route!r}")
        return web.json_response(list(state.arrival_log[route]))

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def list_models(request: web.Request) -> web.Response:
        if not _authorized(state, request):
            state.unauthorized += 1
            return _error(401, "invalid api key")
        return web.json_response(fake.models())

    async def get_model(request: web.Request) -> web.Response:
        if not _authorized(state, request):
            state.unauthorized += 1
            return _error(401, "invalid api key")
        model_id = request.match_info["model"]
        found = fake.model(model_id)
        if found is None:
            body = {
                "error": {
                    "message": f"The model '{model_id}' does not exist",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            }
            return web.json_response(body, status=404)
        return web.json_response(found)

    app.router.add_post(
        "/v1/chat/completions",
        _route(state, "chat", chat_key, chat_answer, parse=chat_body, streamer=chat_stream),
    )
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    # Lookups: one path parameter is the key, the answer is made from it.
    for path, route, param, answer in (
        ("/v1/companies/{domain}", "company", "domain", fake.company),
        ("/v1/people/{email}", "person", "email", fake.person),
        ("/v1/sources/{name}", "source", "name", fake.source),
    ):
        app.router.add_get(path, _lookup_route(state, route, param, answer))
    app.router.add_get("/admin/config", _admin(state, get_config))
    app.router.add_post("/admin/config", _admin(state, post_config))
    app.router.add_post("/admin/reset", _admin(state, reset))
    app.router.add_get("/admin/stats", _admin(state, stats))
    app.router.add_get("/admin/arrivals", _admin(state, arrivals))
    app.router.add_get("/healthz", health)
    return app


def serve(host: str, port: int, state: SimState) -> None:
    """Run the server until SIGINT or SIGTERM."""
    web.run_app(
        make_app(state),
        host=host,
        port=port,
        access_log=None,
        print=None,
        backlog=4096,
        handle_signals=True,
        # A caller that hangs up is no longer in flight: its handler is cancelled (and the
        # gauge falls), as a real provider stops work on a closed connection.
        handler_cancellation=True,
    )
