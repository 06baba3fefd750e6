"""The simulated provider's HTTP server (aiohttp), with an admin API and request counters.

Endpoints:
  POST /v1/chat/completions         OpenAI-compatible chat completion (route ``chat``)
  GET  /v1/companies/{domain}       company lookup (route ``company``)
  GET  /v1/people/{email}           person lookup (route ``person``)
  GET  /v1/sources/{name}           one source for multi-source aggregation (route ``source``)
  GET  /admin/config, POST /admin/config (partial update), POST /admin/reset, GET /admin/stats,
  GET  /admin/arrivals?route=R (wall-clock times of the last 200,000 requests)
  GET  /healthz

Any route takes ``?delay_ms=N`` to pin the latency of that one request (for ordering tests).
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
from aiohttp import web

from proj.sim import fake
from proj.sim.config import OUTCOMES, ROUTES, Decision, SimConfig, decide

_TIMELINE_KEEP_S = 900


class SimState:
    """Configuration and counters, shared by all requests of one server process."""

    def __init__(self, config: SimConfig | None = None, api_key: str | None = None) -> None:
        self.api_key = api_key
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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route(
    state: SimState,
    route: str,
    key_of: Callable[[web.Request, Any], str],
    answer: Callable[[web.Request, Any], Any],
) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        authorized = request.headers.get("Authorization") == f"Bearer {state.api_key}"
        # Sources are public URLs: only the provider's own routes take the key.
        if state.api_key is not None and route != "source" and not authorized:
            state.unauthorized += 1
            return _error(401, "invalid api key")
        body = await request.json() if request.can_read_body else None
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
        try:
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            state.in_flight[route] -= 1
        if decision.outcome == "error":
            return _error(decision.status, "simulated server error")
        if decision.outcome == "malformed":
            return web.Response(text="<html>502 upstream garbage", content_type="application/json")
        return web.json_response(answer(request, body))

    return handler


def _chat_key(_: web.Request, body: Any) -> str:
    return json.dumps(body.get("messages", []) if isinstance(body, dict) else [], sort_keys=True)


def _chat_answer(_: web.Request, body: Any) -> dict[str, Any]:
    messages = body.get("messages", []) if isinstance(body, dict) else []
    content = fake.chat_content(messages)
    prompt_tokens = sum(fake.tokens(str(m.get("content", ""))) for m in messages)
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

    app.router.add_post("/v1/chat/completions", _route(state, "chat", _chat_key, _chat_answer))
    app.router.add_get(
        "/v1/companies/{domain}",
        _route(
            state,
            "company",
            lambda r, _: r.match_info["domain"],
            lambda r, _: fake.company(r.match_info["domain"]),
        ),
    )
    app.router.add_get(
        "/v1/people/{email}",
        _route(
            state,
            "person",
            lambda r, _: r.match_info["email"],
            lambda r, _: fake.person(r.match_info["email"]),
        ),
    )
    app.router.add_get(
        "/v1/sources/{name}",
        _route(
            state,
            "source",
            lambda r, _: r.match_info["name"],
            lambda r, _: fake.source(r.match_info["name"]),
        ),
    )
    app.router.add_get("/admin/config", get_config)
    app.router.add_post("/admin/config", post_config)
    app.router.add_post("/admin/reset", reset)
    app.router.add_get("/admin/stats", stats)
    app.router.add_get("/admin/arrivals", arrivals)
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
