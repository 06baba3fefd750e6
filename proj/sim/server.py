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
import collections
import email.utils
import hmac
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
from aiohttp import web

from proj.sim import fake
from proj.sim.config import ADMIN_KEY_HEADER, OUTCOMES, ROUTES, Decision, SimConfig, decide

_TIMELINE_KEEP_S = 900


class SimState:
    """Configuration and counters, shared by all requests of one server process."""

    def __init__(
        self, config: SimConfig | None = None, api_key: str | None = None, *, admin_key: str
    ) -> None:
        if not admin_key:
            raise ValueError("the simulator's admin key must not be empty")
        self.api_key = api_key
        self.admin_key = admin_key
        self.apply(config or SimConfig())
        # A gauge, not a counter: a reset must not forget the requests in flight, or the
        # concurrent capacity is off by what was in flight when it happened.
        self.in_flight = dict.fromkeys(ROUTES, 0)
        self.reset_counters()

    def apply(self, config: SimConfig) -> None:
        self.config = config
        self.applied_at = time.monotonic()
        self.rng = random.Random(config.seed)
        self.forced_429 = {r: config.route(r).rate_limit_next for r in ROUTES}

    def reset_counters(self) -> None:
        self.counts = {r: dict.fromkeys(OUTCOMES, 0) for r in ROUTES}
        self.max_in_flight = dict(self.in_flight)
        self.arrivals: dict[str, collections.deque[float]] = {
            r: collections.deque() for r in ROUTES
        }
        self.timeline: dict[str, collections.Counter[int]] = {
            r: collections.Counter() for r in ROUTES
        }
        self.unauthorized = 0
        # Requests refused with a 400 before the route's simulation: not outcomes.
        self.bad_request = dict.fromkeys(ROUTES, 0)
        self.arrival_log: dict[str, collections.deque[float]] = {
            r: collections.deque(maxlen=200_000) for r in ROUTES
        }

    def admit(self, route: str, key: str) -> Decision:
        self.arrival_log[route].append(time.time())
        if self.forced_429[route] > 0:
            self.forced_429[route] -= 1
            self.counts[route]["rate_limited"] += 1
            return Decision("rate_limited", 429, 0.0, self.config.route(route).retry_after_s)
        now = time.monotonic()
        arrivals = self.arrivals[route]  # admitted requests in the last second
        while arrivals and arrivals[0] <= now - 1.0:
            arrivals.popleft()
        second = int(time.time())
        timeline = self.timeline[route]
        timeline[second] += 1
        if len(timeline) > _TIMELINE_KEEP_S:
            del timeline[min(timeline)]
        decision = decide(
            self.config.route(route),
            key=key,
            elapsed_s=now - self.applied_at,
            in_flight=self.in_flight[route],
            arrivals_last_s=len(arrivals) + 1,
            rng=self.rng,
        )
        if decision.outcome != "rate_limited":
            arrivals.append(now)
        self.counts[route][decision.outcome] += 1
        return decision

    def stats(self, timeline: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "counts": self.counts,
            "totals": {r: sum(c.values()) for r, c in self.counts.items()},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "unauthorized": self.unauthorized,
            "bad_request": self.bad_request,
        }
        if timeline:
            out["timeline"] = {
                r: {str(k): v for k, v in sorted(t.items())} for r, t in self.timeline.items()
            }
        return out


def _retry_after_header(seconds: float, fmt: str) -> str:
    if fmt == "http-date":
        return email.utils.formatdate(time.time() + seconds, usegmt=True)
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:.3f}"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "simulated", "code": status}}
    return web.json_response(body, status=status, headers=headers)


class BadRequest(Exception):
    """A request the provider refuses as invalid (400), before any simulated behaviour."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def response(self) -> web.Response:
        body = {
            "error": {
                "message": self.message,
                "type": "invalid_request_error",
                "param": self.param,
                "code": None,
            }
        }
        return web.json_response(body, status=400)


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


async def _json_body(request: web.Request) -> Any:
    """The body parsed as JSON, or None when there is none (the GET routes)."""
    if not request.can_read_body:
        return None
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise BadRequest(f"the request body is not valid JSON: {err}", "body") from None


def _route(
    state: SimState,
    route: str,
    key_of: Callable[[web.Request, Any], str],
    answer: Callable[[web.Request, Any], Any],
    *,
    parse: Parse = _json_body,
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


def _chat_key(_: web.Request, body: Any) -> str:
    return json.dumps(body.get("messages", []) if isinstance(body, dict) else [], sort_keys=True)


_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


async def _chat_body(request: web.Request) -> dict[str, Any]:
    """The chat request, checked as OpenAI checks it; :class:`BadRequest` names the field."""
    body = await _json_body(request)
    if body is None:
        raise BadRequest("the request body is missing: expected a JSON object", "body")
    if not isinstance(body, dict):
        kind = type(body).__name__
        raise BadRequest(f"the request body must be a JSON object, not {kind}", "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter ('model')", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        what = "missing" if messages is None else "empty or not a list"
        raise BadRequest(f"'messages' is {what}: expected a non-empty list", "messages")
    for i, m in enumerate(messages):
        where = f"messages.[{i}]"
        if not isinstance(m, dict):
            raise BadRequest(f"'{where}' must be an object with role and content", where)
        role = m.get("role")
        if role not in _ROLES:
            raise BadRequest(f"'{where}.role' must be one of {', '.join(_ROLES)}", f"{where}.role")
        content = m.get("content")
        if "content" not in m and role != "assistant":
            raise BadRequest(f"missing required parameter '{where}.content'", f"{where}.content")
        if not isinstance(content, str | list) and not (content is None and role == "assistant"):
            raise BadRequest(f"'{where}.content' must be a string or a list", f"{where}.content")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", "stream")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise BadRequest("'stream_options' must be an object", "stream_options")
        if stream is not True:
            raise BadRequest(
                "'stream_options' is only allowed when 'stream' is enabled", "stream_options"
            )
    return body


def _chat_answer(_: web.Request, body: Any) -> dict[str, Any]:
    messages = body.get("messages", []) if isinstance(body, dict) else []
    content = fake.chat_content(messages)
    prompt_tokens = sum(fake.tokens(fake.message_text(m)) for m in messages)
    completion_tokens = fake.tokens(content)
    return {
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "sim") if isinstance(body, dict) else "sim",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


_FIRST_CHUNK_SHARE = 0.8  # of the latency, before the first chunk (time to first token)


async def _chat_stream(request: web.Request, body: Any, delay: float) -> web.StreamResponse:
    """The chat answer as OpenAI's server-sent events; the deltas join to the plain answer."""
    answer = _chat_answer(request, body)
    pieces = fake.stream_pieces(answer["choices"][0]["message"]["content"])
    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage"))
    base = {k: answer[k] for k in ("id", "created", "model")}

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        c: dict[str, Any] = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return c

    first_wait = delay * _FIRST_CHUNK_SHARE
    gap = (delay - first_wait) / max(1, len(pieces))
    if first_wait > 0:
        await asyncio.sleep(first_wait)
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    response.charset = "utf-8"

    async def send(data: dict[str, Any]) -> None:
        await response.write(b"data: " + json.dumps(data).encode() + b"\n\n")

    try:
        await response.prepare(request)
        await send(chunk({"role": "assistant", "content": ""}, None))
        for i, piece in enumerate(pieces):
            if gap > 0:
                await asyncio.sleep(gap)
            await send(chunk({"content": piece}, "stop" if i == len(pieces) - 1 else None))
        if not pieces:
            await send(chunk({}, "stop"))
        if include_usage:
            await send(
                {**base, "object": "chat.completion.chunk", "choices": [], "usage": answer["usage"]}
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionError:
        pass  # the caller hung up mid-stream; the handler's finally drops the gauge
    return response


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
        _route(state, "chat", _chat_key, _chat_answer, parse=_chat_body, streamer=_chat_stream),
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
