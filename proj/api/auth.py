"""Who is calling: the bearer key, its scope for this route, and its rate limit (proj's own
global limiter, so the limit holds across every ``proj api`` process)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from proj.api.errors import ApiError
from proj.api.keys import ApiKey, KeyRing
from proj.guard import registry
from proj.resilience.ratelimit import RateLimitWait

CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require(scope: str) -> Any:
    """A route dependency: the caller's :class:`ApiKey`, which must have ``scope``."""

    async def caller(request: Request) -> ApiKey:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "no API key: send Authorization: Bearer <key>", headers=CHALLENGE)
        ring: KeyRing = request.app.state.keys
        key = ring.find(token.strip())
        if key is None:
            raise ApiError(401, "unknown API key", headers=CHALLENGE)
        if not key.allows(scope):
            raise ApiError(403, f"API key {key.name!r} does not have the scope {scope!r}")
        if key.rate_limit is not None:
            limiter = registry.limiter(f"api:{key.name}", key.rate_limit)
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
