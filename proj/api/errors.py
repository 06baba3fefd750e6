"""Every error ``proj api`` answers is JSON with one clear message: ``{"error": "..."}``, plus
the details a client can act on (the rejected items, the field)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException

from proj.poison import shown

logger = logging.getLogger("proj.api")


def safe(value: Any) -> Any:
    """``value`` as strict JSON can carry it: NaN and infinities (which Python's JSON parser
    accepts in a request) become their repr, a string with a lone surrogate its escapes."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, Mapping):
        return {safe(k): safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """Every answer of ``proj api``: strict JSON whatever the request echoed back."""

    def render(self, content: Any) -> bytes:
        return super().render(safe(content))


class ApiError(Exception):
    """An answer other than success: its status, message, headers and any details."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.details = details

    def response(self) -> JSONResponse:
        return SafeJSONResponse(
            {"error": self.message, **self.details}, self.status, headers=self.headers
        )


def validation_message(errors: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """One line for the first problem (field and value), and every problem as data."""
    problems = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        field = ".".join(loc) or "body"
        if e.get("type") == "json_invalid":
            reason = f"the body is not valid JSON ({e.get('ctx', {}).get('error', e['msg'])})"
            problems.append({"field": "body", "reason": reason})
            continue
        problems.append({"field": field, "value": e.get("input"), "reason": e["msg"]})
    first = problems[0]
    line = (
        first["reason"]
        if first["field"] == "body" and "value" not in first
        else (f"{first['field']}: {first['reason']}, got {shown(first.get('value'))}")
    )
    if len(problems) > 1:
        line += f" (and {len(problems) - 1} more problems)"
    return line, problems


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        line, problems = validation_message(list(exc.errors()))
        return SafeJSONResponse({"error": line, "errors": problems}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    @app.exception_handler(OperationalError)
    async def unreachable(request: Request, exc: Exception) -> JSONResponse:
        what = "the broker" if isinstance(exc, OperationalError) else "Redis"
        logger.warning("%s %s: %s unreachable: %s", request.method, request.url.path, what, exc)
        message = f"{what} is unreachable; nothing was changed, try again"
        return JSONResponse({"error": message}, 503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error; the server's log has the details"}, 500)
