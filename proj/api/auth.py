"""Who is calling: the bearer key, its scope for this route, and its rate limit (proj's own
global limiter, so the limit holds across every ``proj api`` process)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from proj.api.errors import ApiError
from proj.api.keys import ApiKey, KeyRing
from proj.guard import registry
from proj.resilience.ratelimit import RateLimitWait

CHALLENGE = {"WWW-Authenticate": "Bearer"}
NO_KEY = "no API key: send Authorization: Bearer <key>"
UNKNOWN_KEY = "unknown API key"


def _presented(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class KeyGate:
    """ASGI middleware: a request to ``/v1/`` without a known key is answered 401 before its
    body is read (a stranger cannot make the server read and parse megabytes). The key found
    goes on with the request (``request.state.api_key``); the route's dependency
    (:func:`require`) checks its scope and rate."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and get_route_path(scope).startswith("/v1/"):
            headers = dict(scope.get("headers", ()))
            token = _presented(headers.get(b"authorization", b"").decode("latin-1"))
            ring: KeyRing = scope["app"].state.keys
            key = None if token is None else ring.find(token)
            if key is None:
                # Connection: close, so the server does not read the rest of a body it refused.
                shut = {**CHALLENGE, "Connection": "close"}
                error = ApiError(401, NO_KEY if token is None else UNKNOWN_KEY, headers=shut)
                await error.response()(scope, receive, send)
                return
            scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)


def require(scope: str) -> Any:
    """A route dependency: the caller's :class:`ApiKey`, which must have ``scope``."""

    async def caller(request: Request) -> ApiKey:
        key: ApiKey = request.state.api_key  # found by KeyGate, which every /v1/ route is under
        if not key.allows(scope):
            raise ApiError(403, f"API key {key.name!r} does not have the scope {scope!r}")
        if key.rate_limit is not None:
            # The rate in the name: a rate changed in the keys file is a new budget, not a
            # clash with the limiter this process made for the old one.
            lim = key.rate_limit
            limiter = registry.limiter(f"api:{key.name}:{lim.rate:g}/{lim.per_s:g}s", lim)
            try:
                await limiter.aacquire(max_wait_s=0)
            except RateLimitWait as wait:
                raise ApiError(
                    429,
                    f"API key {key.name!r} is over its rate limit; retry in {wait.wait_s:.2f}s",
                    headers={"Retry-After": str(max(1, math.ceil(wait.wait_s)))},
                ) from None
        return key

    dep: Callable[[Request], Awaitable[ApiKey]] = caller
    return Depends(dep)


def check_owner(key: ApiKey, owner: str | None, what: str) -> None:
    """A key sees what it submitted; a key with every scope (``*``) sees everything. Someone
    else's is answered as missing, so ids cannot be probed."""
    if owner != key.name and "*" not in key.scopes:
        raise ApiError(404, f"{what} not found")


#: The caller of a route, by what the route needs.
BatchWriter = Annotated[ApiKey, require("batches:write")]
BatchReader = Annotated[ApiKey, require("batches:read")]
TaskWriter = Annotated[ApiKey, require("tasks:write")]
TaskReader = Annotated[ApiKey, require("tasks:read")]
